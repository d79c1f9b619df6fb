"""The proxy task: a stratified subset of the user's data, and a short from-scratch training.

Why this does not call `workbench.engine.fine_tune`: the engine's recipe is transfer learning.
Its phase 1 trains the head on a frozen backbone, and its phase 2 keeps every BatchNormalization
layer frozen in inference mode (the right call for ImageNet weights on small batches). A
candidate of the search starts from random weights: with BatchNorm frozen at its initial
statistics the network trains without normalisation, which penalises depth and would bias the
search against α. So the proxy uses the engine's pieces (the same data pipeline, AdamW with
warmup + cosine decay from `workbench.engine.optim`, label smoothing, and the engine's
`ProgressEvents` callback writing the same events.jsonl) around a plain `model.fit` with every
layer trainable.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from workbench.scaling_search.config import EAGER_MAX_STEPS, ProxyConfig


def subset_manifest(manifest, train_per_class: int, val_per_class: int, seed: int):
    """At most `train_per_class` train and `val_per_class` val images of each class, picked by a
    seeded hash of the path (the same rule `pipelines.splits` uses): stratified and stable."""
    from pipelines.splits import order_key

    quota = {"train": train_per_class, "val": val_per_class}
    ranked = sorted((r for r in manifest.usable() if r.split in quota), key=lambda r: order_key(seed, r.path))
    taken: dict[tuple[str, str], int] = {}
    keep = set()
    for record in ranked:
        key = (record.split, record.label)
        if taken.get(key, 0) < quota[record.split]:
            taken[key] = taken.get(key, 0) + 1
            keep.add(record.path)
    records = [r for r in manifest.records if r.ok and r.path in keep]  # manifest order: stable datasets
    return dataclasses.replace(manifest, records=records)


def train_candidate(model, subset, proxy: ProxyConfig, resolution: int, writer, seed: int) -> dict:
    """Train `model` on the subset at `resolution` for the proxy schedule; events go to `writer`.

    Returns best and last validation accuracy, the epoch of the best, and the training seconds.
    """
    import keras

    from pipelines import make_datasets
    from workbench.engine.callbacks import NonFiniteGuard, ProgressEvents, RunSignals
    from workbench.engine.optim import adamw

    ds = make_datasets(subset, image_size=resolution, batch_size=proxy.batch_size, augment=proxy.augment, seed=seed)
    n_train = subset.split_sizes()["train"]
    steps = ds.steps("train")
    total = proxy.epochs * steps
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = proxy.bn_momentum
    eager = proxy.execution == "eager" or (
        proxy.execution == "auto" and total + ds.steps("val") * proxy.epochs <= EAGER_MAX_STEPS
    )
    model.compile(
        optimizer=adamw(
            proxy.learning_rate, total, warmup_fraction=proxy.warmup_fraction, weight_decay=proxy.weight_decay
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=proxy.label_smoothing),
        metrics=["accuracy"],
        jit_compile=False,
        run_eagerly=eager,
    )
    writer.phase(
        phase=1,
        name="proxy (from random init, all layers train)",
        epochs=proxy.epochs,
        image_size=resolution,
        num_train=n_train,
        num_val=subset.split_sizes()["val"],
        batch_size=proxy.batch_size,
        eager=eager,
    )
    signals = RunSignals()
    start = time.perf_counter()
    history = model.fit(
        ds.train,
        validation_data=ds.val,
        epochs=proxy.epochs,
        verbose=0,
        callbacks=[
            ProgressEvents(
                writer,
                phase=1,
                epochs=proxy.epochs,
                steps=steps,
                num_images=n_train,
                global_batch=proxy.batch_size,
                signals=signals,
            ),
            NonFiniteGuard(1, signals),
        ],
    )
    seconds = time.perf_counter() - start
    val = [float(v) for v in history.history.get("val_accuracy", [])]
    if signals.diverged:
        # A candidate that diverges on the shared schedule scores what it reached before (0 if nothing).
        writer.error(message=signals.diverged)
        val = val[:-1] or [0.0]
    best = max(range(len(val)), key=lambda i: val[i])
    writer.done(run_dir=Path(writer.path).parent, best_val_accuracy=val[best], model_path=None, best_epoch=best + 1)
    return {"val_accuracy": val[best], "last_val_accuracy": val[-1], "best_epoch": best + 1, "train_seconds": seconds}
