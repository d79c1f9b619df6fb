"""Phase-1 feature caching: run the frozen backbone once, then train the head on its output.

With a frozen backbone and no pixel augmentation, every epoch would recompute exactly the same
pooled features; computing them once turns each later epoch into a few Dense steps (the
`bench_time_to_accuracy` benchmark measures the gain against recomputing them every epoch).

`cached_features` is what the recipe calls: the cache of the run (`checkpoints/features.npz`) when
it was made for the same key, else one pass over the train and val splits that reports its progress
as `batch` events of phase 1, epoch 0, `"stage": "features"`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.files import atomic_path


def extract_features(
    extractor,
    dataset,
    *,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pooled features (float32) and labels of every batch of `dataset`, in dataset order.

    `extractor` maps images to pooled features (`workbench.models.surgery.feature_extractor`), or to any
    activation (the trunk of `split_at_block`); it is called in inference mode. Returns None when `should_stop()` turns true.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def features(images):
        # float32 storage whatever the compute precision: the float32 head reads it.
        return tf.cast(extractor(images, training=False), tf.float32)

    feats, labels = [], []
    n = 0
    for images, y in dataset:
        if should_stop is not None and should_stop():
            return None
        feats.append(features(images).numpy())
        labels.append(np.asarray(y, dtype=np.float32))
        n += len(labels[-1])
        if on_batch is not None:
            on_batch(len(feats), n)
    if not feats:
        return np.zeros((0, extractor.output_shape[-1]), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(feats), np.concatenate(labels)


def feature_dataset(features: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int):
    """A tf.data pipeline over cached features, reshuffled every epoch when `shuffle`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def save_cache(path: Path, key: dict, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, _key=np.array(json.dumps(key, sort_keys=True)), **arrays)


def load_cache(path: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the cache is missing or was made for another key."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            if str(data["_key"]) != json.dumps(key, sort_keys=True):
                return None
            return {k: data[k] for k in data.files if k != "_key"}
    except (OSError, ValueError, KeyError):
        return None


SPLITS = ("train", "val")


def cached_features(
    path: Path,
    key: dict,
    model,
    datasets,
    *,
    writer,
    sizes: dict[str, int],
    global_batch: int,
    should_stop: Callable[[], bool],
) -> dict[str, np.ndarray] | None:
    """`train_x`, `train_y`, `val_x`, `val_y`: the pooled features of `model`'s backbone and the labels.

    Loaded from `path` when its key equals `key`; else computed (`sizes`: images per split, for the
    progress events) from `datasets.plain(split)` (the
    un-augmented, un-shuffled pipelines of `pipelines.make_datasets`) and saved there. Returns None
    when `should_stop()` turned true during the pass (nothing is saved then).
    """
    from workbench.models.surgery import feature_extractor

    cache = load_cache(path, key)
    if cache is not None:
        return cache
    progress = _FeaturePassProgress(writer, sizes, global_batch)
    cache = _both_splits(feature_extractor(model), datasets, progress, should_stop)
    if cache is not None:
        save_cache(path, key, cache)
    return cache


def cached_activations(
    trunk, datasets, *, writer, sizes: dict[str, int], global_batch: int, phase: int, should_stop: Callable[[], bool]
) -> dict[str, np.ndarray] | None:
    """`train_x`, `train_y`, `val_x`, `val_y`: what the frozen `trunk` makes of every image, computed once
    for a fine-tuning phase (in memory; a resumed run computes them again). Progress is reported as `batch`
    events of `phase`, epoch 0, `"stage": "trunk"`. None when `should_stop()` turned true."""
    progress = _FeaturePassProgress(writer, sizes, global_batch, phase=phase, stage="trunk")
    return _both_splits(trunk, datasets, progress, should_stop)


def _both_splits(extractor, datasets, progress, should_stop: Callable[[], bool]) -> dict[str, np.ndarray] | None:
    """One pass of `extractor` over the plain train and val pipelines, reported by `progress`; None on STOP."""
    cache = {}
    for split in SPLITS:
        result = extract_features(
            extractor, datasets.plain(split), on_batch=progress.reporter(split), should_stop=should_stop
        )
        if result is None:
            return None
        cache[f"{split}_x"], cache[f"{split}_y"] = result
    return cache


class _FeaturePassProgress:
    """`batch` events for the feature pass: steps, images/s and ETA over both splits together."""

    def __init__(self, writer, sizes: dict[str, int], global_batch: int, phase: int = 1, stage: str = "features"):
        self.writer = writer
        self.phase, self.stage = phase, stage
        self.total_images = sum(sizes[s] for s in SPLITS)
        self.total_steps = sum(math.ceil(sizes[s] / global_batch) for s in SPLITS)
        self.start = time.perf_counter()
        self.steps = self.images = 0  # totals of the splits already done

    def reporter(self, split: str) -> Callable[[int, int], None]:
        """`on_batch(step, images)` for the pass over `split` (counts within that split)."""
        steps_before, images_before = self.steps, self.images

        def on_batch(step: int, images: int) -> None:
            self.steps, self.images = steps_before + step, images_before + images
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            # Epoch 0 of phase 1 is the single pass that computes the cached features.
            self.writer.batch(
                phase=self.phase,
                epoch=0,
                step=self.steps,
                steps=self.total_steps,
                loss=None,
                accuracy=None,
                images_per_s=self.images / elapsed,
                eta_s=(self.total_images - self.images) * elapsed / self.images,
                stage=self.stage,
                split=split,
            )

        return on_batch
