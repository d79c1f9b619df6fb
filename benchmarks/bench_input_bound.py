"""Input-bound fraction: the share of wall time a Lite0 fine-tuning epoch at 160 px waits for data.

The training loop is the engine's phase 2 (top 3 blocks and the head trainable, AdamW), driven batch by batch so
the time spent in `next(iterator)` (waiting for tf.data) can be told from the time spent in the train step. The
data path is `pipelines.make_datasets(..., augment="light")`: shuffle, random-resized crop, flip, batch, prefetch.
Two data sets: the embedded sample (what `workbench train` uses: 32 px PNGs) and JPEG photos of 200-500 px
(CIFAR-10 upscaled, as in bench_input_pipeline.py). The epoch without a cache is the worst case; a cached epoch
(epoch 2+) is also reported. The baseline in the same run is the same loop over batches already in memory
(zero input cost), which gives the step time the input has to keep up with.

    python benchmarks/bench_input_bound.py [--images 640] [--size 160] [--batch 32] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_input_pipeline import DEFAULT_SOURCE, cpu_model, make_jpegs


def build_lite0(num_classes: int, size: int):
    import keras

    from workbench.models import build_model
    from workbench.models.surgery import freeze_backbone, unfreeze_top_blocks

    try:
        model = build_model("lite0", num_classes, weights="imagenet", input_shape=(size, size, 3))
        weights = "imagenet"
    except Exception as exc:  # the timing does not depend on the weights' values
        print(f"(ImageNet weights unavailable: {str(exc)[:120]}; timing with random weights)")
        model = build_model("lite0", num_classes, weights=None, input_shape=(size, size, 3))
        weights = "random"
    freeze_backbone(model)
    unfreeze_top_blocks(model, 3)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy", metrics=["accuracy"])
    return model, weights


def epoch(model, dataset) -> dict[str, float]:
    """One epoch batch by batch: wall seconds, seconds waiting in next(iterator), images."""
    iterator = iter(dataset)
    wait = step = 0.0
    images = 0
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(iterator)
        except StopIteration:
            wait += time.perf_counter() - t0
            break
        t1 = time.perf_counter()
        model.train_on_batch(x, y)  # returns numbers, so the step has finished when it returns
        step += time.perf_counter() - t1
        wait += t1 - t0
        images += int(x.shape[0])
    wall = time.perf_counter() - start
    return {"wall": wall, "wait": wait, "step": step, "images": images}


def report(name: str, r: dict[str, float]) -> None:
    print(
        f"  {name:46s} {r['wall']:7.1f} s  wait {r['wait']:6.2f} s = {100 * r['wait'] / r['wall']:5.1f}% "
        f"of wall   {r['images'] / r['wall']:6.1f} images/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640, help="JPEG photos to generate")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DEFAULT_SOURCE, help="folder of class folders to upscale")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(
            f"error: source images {args.data} not found; pass --data DIR, e.g. --data pipelines/sample_data",
            file=sys.stderr,
        )
        return 2

    import keras
    import tensorflow as tf

    from pipelines import ingest, make_datasets

    tmp = Path(tempfile.mkdtemp(prefix="bench-bound-"))
    try:
        make_jpegs(args.data, tmp / "jpegs", args.images)
        sources = {
            "embedded sample (32 px PNG)": ingest(None, tmp / "w-sample", val_fraction=0.0, test_fraction=0.0),
            f"JPEG photos 200-500 px ({args.images})": ingest(
                tmp / "jpegs", tmp / "w-jpeg", val_fraction=0.0, test_fraction=0.0
            ),
        }
        print(
            f"machine: {os.cpu_count()} cores, {cpu_model()}, TensorFlow {tf.__version__}, Keras "
            f"{keras.__version__}; load average {os.getloadavg()[0]:.1f} at start (shared with other processes)"
        )
        print(f"Lite0 at {args.size} px, batch {args.batch}, phase 2 (top 3 blocks + head train), augment light")
        for name, manifest in sources.items():
            model, weights = build_lite0(manifest.num_classes, args.size)
            cold = make_datasets(
                manifest, image_size=args.size, batch_size=args.batch, augment="light", cache="none"
            ).train
            cached = make_datasets(
                manifest, image_size=args.size, batch_size=args.batch, augment="light", cache="memory"
            ).train
            in_memory = [(x, y) for x, y in cold]  # the same batches, already decoded: zero input cost
            for x, y in (in_memory[0], in_memory[-1]):  # trace the train step (full and last batch shapes)
                model.train_on_batch(x, y)  # outside the timed epochs
            print(f"\n{name}: {len(manifest.usable())} images, {weights} weights")
            report("baseline: batches already in memory", epoch(model, in_memory))
            report("pipelines, no cache (epoch 1 / cache off)", epoch(model, cold))
            epoch(model, cached)  # fills the cache
            report("pipelines, cached (epoch 2+)", epoch(model, cached))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
