"""The automatic recipe against today's fixed defaults and the naive keras.io loop, on the same test images.

Three ways to train Lite0 (ImageNet weights) on the same training folder, run one after the other in this
process, each scored on the same held-out test images that none of them sees:

* `auto`: `workbench train DATA` with no flags (`--recipe auto`, the default, with its default budget),
  then evaluation and export, as the CLI does them;
* `fixed`: `workbench train DATA --recipe fixed` (the documented defaults of the fixed recipe);
* `naive`: the keras.io transfer-learning loop: `keras.utils.image_dataset_from_directory` with a random
  80/20 split at 224 px, a random horizontal flip, Adam at 1e-2 for 5 epochs on the head (backbone frozen),
  then Adam at 1e-4 for 2 epochs with the top 20 layers unfrozen (BatchNorm kept frozen).

`auto` and `fixed` also report their own validation and test splits (the data's own stratified split),
which is what the issue's bar on the CIFAR subset is stated in. Time is wall clock from the first file
read: "train" is until the model is saved; "total" adds evaluation and export (the naive loop has neither).

    python benchmarks/bench_auto_recipe.py --data ../shared/data/cifar10-train-subset
    python benchmarks/bench_auto_recipe.py --data /tmp/fashion6/train --test /tmp/fashion6/test
    python benchmarks/bench_auto_recipe.py --measure-cost --resolution 160     # TRAIN_COST of auto.py

`second_dataset.py` builds the second data set (grayscale 28 px clothes, imbalanced). Without `--test`, the
held-out images are the first workbench run's own test split (the stratified 15% that `workbench train DATA`
holds out; every workbench run here makes the same split), and the naive loop trains on all the other images,
so all three are scored on the images the issue's bar names. With `--holdout F`, a stratified share F of each
class is held out beforehand instead (links, no copies).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import CIFAR_SUBSET

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def hold_out(data: Path, fraction: float, dest: Path, seed: int = 0) -> tuple[Path, Path]:
    """`dest/train` and `dest/test` as links: `fraction` of every class (sorted, then shuffled) held out."""
    import random

    rng = random.Random(seed)
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(files)
        cut = round(len(files) * fraction)
        for split, chosen in (("test", files[:cut]), ("train", files[cut:])):
            (dest / split / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                os.symlink(f.resolve(), dest / split / folder.name / f.name)
    return dest / "train", dest / "test"


def warm_up() -> None:
    """Pay the one-off costs of a process (TensorFlow's start, reading Lite0's checkpoint, first graphs) before
    anything is timed, so the method that runs first is not charged for them."""
    import numpy as np

    from workbench.models import build_model

    model = build_model("lite0", num_classes=2, weights="imagenet", input_shape=(64, 64, 3))
    model.predict_on_batch(np.zeros((2, 64, 64, 3), np.float32))


def complement(data: Path, run_dir: Path, dest: Path) -> tuple[Path, Path]:
    """`dest/train`: every image of `data` outside the run's own test split; `dest/test`: that split (links)."""
    from pipelines import Manifest

    manifest = Manifest.load(run_dir / "manifest.json")
    held = {Path(r.path).resolve() for r in manifest.split_records("test")}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            split = "test" if f.resolve() in held else "train"
            if f.suffix.lower() in IMAGE_SUFFIXES:
                (dest / split / folder.name).mkdir(parents=True, exist_ok=True)
                os.symlink(f.resolve(), dest / split / folder.name / f.name)
    return dest / "train", dest / "test"


def run_workbench(train: Path, test: Path | None, out: Path, mode: str) -> dict:
    """`workbench train TRAIN [--recipe fixed]`: train, evaluate (own test split), export; then score TEST
    (None: the run's own test split)."""
    from workbench.engine import RunConfig, fine_tune
    from workbench.evaluation import evaluate
    from workbench.serving.export import export

    start = time.perf_counter()
    curve = []

    def listen(event):
        if event["type"] == "epoch":
            curve.append((round(time.perf_counter() - start, 1), event["phase"], event["epoch"], event["val_accuracy"]))
            print(
                f"  {mode:5s} {curve[-1][0]:7.1f} s  phase {event['phase']} epoch {event['epoch']:2d}  "
                f"val_acc {event['val_accuracy']:.4f}",
                flush=True,
            )
        elif event["type"] == "plan":
            for line in event["decisions"]:
                print(f"  auto: {line}", flush=True)

    result = fine_tune(RunConfig(data=str(train), out=str(out), recipe_mode=mode), listeners=[listen])
    train_seconds = time.perf_counter() - start
    own = evaluate(result.run_dir)  # the CLI's evaluation: the run's own test split
    export(result.run_dir)  # the CLI's default export
    total_seconds = time.perf_counter() - start
    held_out = own if test is None else evaluate(result.run_dir, data=str(test), split="all", plots=False)
    decisions = RunConfig.load(result.run_dir / "config.yaml").auto_decisions  # both plans' final choices
    return {
        "run_dir": str(result.run_dir),
        "test_accuracy": held_out["accuracy"],
        "own_val_accuracy": result.best_val_accuracy,
        "own_test_accuracy": own.get("accuracy"),
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "curve": curve,
        "decisions": decisions,
    }


def run_naive(train: Path, test: Path, seed: int = 0) -> dict:
    """The keras.io loop (see the module docstring), timed from the first file read."""
    import keras
    import tensorflow as tf

    from workbench.models import build_model
    from workbench.models.surgery import freeze_backbone

    start = time.perf_counter()
    size = (224, 224)
    train_ds, val_ds = keras.utils.image_dataset_from_directory(
        train, validation_split=0.2, subset="both", seed=seed, image_size=size, batch_size=32, label_mode="categorical"
    )
    classes = train_ds.class_names
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    train_ds = train_ds.map(lambda x, y: (flip(x, training=True), y)).prefetch(tf.data.AUTOTUNE)
    keras.utils.set_random_seed(seed)
    model = build_model("lite0", num_classes=len(classes), weights="imagenet", input_shape=(*size, 3))
    freeze_backbone(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"])
    curve = []

    def fit(epochs: int, stage: str) -> None:
        for _ in range(epochs):
            history = model.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0)
            curve.append((round(time.perf_counter() - start, 1), stage, float(history.history["val_accuracy"][-1])))
            print(f"  naive {curve[-1][0]:7.1f} s  {stage}  val_acc {curve[-1][2]:.4f}", flush=True)

    fit(5, "head")
    for layer in model.layers[-20:]:
        if not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"])
    fit(2, "top-20")
    train_seconds = time.perf_counter() - start
    test_ds = keras.utils.image_dataset_from_directory(
        test, image_size=size, batch_size=32, label_mode="categorical", shuffle=False, class_names=classes
    )
    _, accuracy = model.evaluate(test_ds, verbose=0)
    return {
        "test_accuracy": float(accuracy),
        "own_val_accuracy": max(c[2] for c in curve),
        "train_seconds": train_seconds,
        "total_seconds": train_seconds,
        "curve": curve,
    }


def measure_cost(resolution: int, batch: int = 32, rounds: int = 4) -> dict:
    """`auto.TRAIN_COST` and `auto.VAL_COST` at `resolution`: what a phase-2 image costs, in forward passes of
    the whole Lite0, when the blocks below the unfrozen ones are cached (the engine's default): a training
    step of the model from the first unfrozen block up, and its inference for validation."""
    import keras
    import numpy as np

    from workbench.models import build_model
    from workbench.models.surgery import block_names, freeze_backbone, split_at_block, unfreeze_top_blocks

    def images_per_s(step, x, *args) -> float:
        step(x, *args)  # warm-up: tracing
        start = time.perf_counter()
        for _ in range(rounds):
            step(x, *args)
        return rounds * batch / (time.perf_counter() - start)

    x = np.random.default_rng(0).uniform(0, 255, (batch, resolution, resolution, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(batch) % 10, 10)
    model = build_model("lite0", num_classes=10, weights=None, input_shape=(resolution, resolution, 3))
    freeze_backbone(model)
    forward = images_per_s(model.predict_on_batch, x)
    report = {"resolution": resolution, "forward_images_per_s": forward, "train_cost": {}, "val_cost": {}}
    for depth in (1, 2, 3, 4, 6, 8):
        unfrozen = unfreeze_top_blocks(model, depth)
        trunk, top = split_at_block(model, unfrozen[0])
        activations = np.asarray(trunk.predict_on_batch(x))
        top.compile(optimizer="adamw", loss="categorical_crossentropy")
        train = images_per_s(top.train_on_batch, activations, y)
        val = images_per_s(top.predict_on_batch, activations)
        report["train_cost"][depth] = round(forward / train, 3)
        report["val_cost"][depth] = round(forward / val, 3)
        print(
            f"  {resolution} px, {depth} blocks ({block_names(model)[-depth]}..): train {train:.0f} img/s = "
            f"{forward / train:.2f} forward passes, val {forward / val:.2f}",
            flush=True,
        )
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CIFAR_SUBSET, help="folder of class folders to train on")
    parser.add_argument("--test", type=Path, default=None, help="held-out folder of class folders to score on")
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="without --test: share of each class held out (0: the run's own test split)",
    )
    parser.add_argument("--methods", default="auto,fixed,naive")
    parser.add_argument("--measure-cost", action="store_true", help="only measure auto.TRAIN_COST")
    parser.add_argument("--resolution", type=int, default=160, help="with --measure-cost")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)

    from bench_step_throughput import machine

    if args.measure_cost:
        report = {"benchmark": "train_cost", "machine": machine(), **measure_cost(args.resolution)}
        print(json.dumps(report, indent=1))
        return 0
    if not args.data.is_dir():
        print(f"{args.data} is not a folder of class folders; pass --data", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-auto-"))
    results = {}
    try:
        own_split = args.test is None and not args.holdout
        if args.test:
            train, test = args.data, args.test
        elif args.holdout:
            train, test = hold_out(args.data, args.holdout, work / "data")
        else:
            train, test = args.data, None
        warm_up()
        methods = sorted(args.methods.split(","), key=lambda m: m == "naive")  # the naive loop last
        first_run = None
        for method in methods:
            print(f"{method}:", flush=True)
            if method == "naive":
                naive_train, naive_test = train, test
                if own_split:  # every image but the workbench runs' own test split
                    if first_run is None:
                        raise SystemExit("the naive loop is scored on a workbench run's test split: add auto or fixed")
                    naive_train, naive_test = complement(train, first_run, work / "naive")
                results[method] = run_naive(naive_train, naive_test)
            else:
                results[method] = run_workbench(train, test, work / "runs", method)
                first_run = first_run or Path(results[method]["run_dir"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "auto_recipe",
        "machine": machine(),
        "data": str(args.data),
        "test": str(args.test) if args.test else f"{args.holdout:.0%} of each class held out",
        "results": results,
    }
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average'][0]:.1f}")
    print(f"{'method':8s} {'held-out test':>13s} {'own val':>8s} {'own test':>9s} {'train s':>8s} {'total s':>8s}")
    for method, r in results.items():
        own_test = r.get("own_test_accuracy")
        print(
            f"{method:8s} {r['test_accuracy']:13.4f} {r['own_val_accuracy']:8.4f} "
            f"{'-' if own_test is None else f'{own_test:.4f}':>9s} {r['train_seconds']:8.0f} {r['total_seconds']:8.0f}"
        )
    if "naive" in results:
        for method in results.keys() - {"naive"}:
            ratio = results["naive"]["train_seconds"] / results[method]["train_seconds"]
            print(f"naive train time / {method} train time = {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
