"""Input throughput: our tf.data path vs `keras.utils.image_dataset_from_directory`, same tensors, same run.

Generates JPEGs of mixed sizes (CIFAR-10 images upscaled to 200-500 px per side, so aspect ratios vary) into a
temporary folder, then times one full pass of decode -> aspect-preserving resize (short side + centre crop) ->
batch for both, producing float32 (B, R, R, 3) images and one-hot labels. Also reports our training path
(random-resized crop + flip) and a cached second epoch. Reports images/s (wall clock, best pass) and images
per CPU-second of this process (median pass), each with its ratio to the baseline, and the machine. On a machine
shared with other work the wall-clock rates swing with the load; the CPU-time rates stay put.

    python benchmarks/bench_input_pipeline.py [--images 3000] [--sizes 224 160] [--batch 32] [--data DIR]

Without ../shared/data (a fresh clone), pass `--data pipelines/sample_data` (the embedded sample).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import CIFAR_SUBSET, cpu_model

DEFAULT_SOURCE = CIFAR_SUBSET


def make_jpegs(source: Path, dest: Path, count: int, seed: int = 0) -> int:
    """`count` JPEGs (quality 90): source images upscaled to random sizes in 200..500 px per side.

    Sources are used round-robin per class, each time at a new random size, so a small source set still gives
    `count` different files.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    per_class = max(1, count // len(classes))
    for class_dir in classes:
        out = dest / class_dir.name
        out.mkdir(parents=True)
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(200, 501, 2))
            with Image.open(files[i % len(files)]) as im:
                im.convert("RGB").resize((w, h), Image.BICUBIC).save(out / f"{i:05d}.jpg", quality=90)
    return per_class * len(classes)


def time_pass(ds) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, images) for one full pass over `ds`."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    n = 0
    for images, _ in ds:
        n += int(images.shape[0])
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return time.perf_counter() - start, cpu, n


def main() -> int:
    # Long on purpose (issue 10): a linear benchmark script, set up, measured and printed top to bottom.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 160], help="output sides R in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per pipeline, interleaved")
    parser.add_argument("--data", type=Path, default=DEFAULT_SOURCE, help="folder of class folders to upscale")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(
            f"error: source images {args.data} not found; pass --data DIR (a folder of class folders), "
            "e.g. --data pipelines/sample_data",
            file=sys.stderr,
        )
        return 2

    import keras
    import tensorflow as tf

    from pipelines import ingest, make_datasets

    tmp = Path(tempfile.mkdtemp(prefix="bench-input-"))
    try:
        t0 = time.perf_counter()
        n_files = make_jpegs(args.data, tmp / "jpegs", args.images)
        print(f"generated {n_files} JPEGs (200-500 px per side, from {args.data}) in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        manifest = ingest(tmp / "jpegs", tmp / "work", val_fraction=0.0, test_fraction=0.0)
        ingest_s = time.perf_counter() - t0
        print(
            f"ingest (one Pillow pass over every file, once per dataset): {ingest_s:.1f} s, "
            f"{n_files / ingest_s:.0f} files/s"
        )
        print(
            f"machine: {os.cpu_count()} cores, {cpu_model()}, TensorFlow {tf.__version__}, Keras "
            f"{keras.__version__}; os.getloadavg() at start {os.getloadavg()[0]:.1f} (machine shared with other "
            "processes: wall-clock rates vary, CPU-time rates are steadier)"
        )
        batch = args.batch
        for size in args.sizes:

            def ours(augment="none", cache="none", size=size):
                return make_datasets(manifest, image_size=size, batch_size=batch, augment=augment, cache=cache)

            def keras_baseline(size=size):
                return keras.utils.image_dataset_from_directory(
                    tmp / "jpegs",
                    image_size=(size, size),
                    batch_size=batch,
                    label_mode="categorical",
                    crop_to_aspect_ratio=True,
                    shuffle=False,
                    verbose=False,
                ).prefetch(tf.data.AUTOTUNE)

            x_ours, y_ours = next(iter(ours().plain("train")))
            x_keras, y_keras = next(iter(keras_baseline()))
            assert x_ours.shape == x_keras.shape and x_ours.dtype == x_keras.dtype == tf.float32
            assert y_ours.shape == y_keras.shape and y_ours.dtype == y_keras.dtype
            diff = float(tf.reduce_mean(tf.abs(x_ours - x_keras)))

            pipelines = {
                "keras.utils.image_dataset_from_directory": keras_baseline,
                "pipelines, evaluation path (centre crop)": lambda: ours().plain("train"),
                # "light": shuffle, random-resized crop and flip (no batch-level Keras layers).
                "pipelines, training path (crop + flip)": lambda: ours("light").train,
            }
            wall: dict[str, float] = {}
            cpu: dict[str, list[float]] = {}
            for _ in range(args.repeats):  # interleaved, so load from other processes hits all alike
                for name, build in pipelines.items():
                    seconds, cpu_s, n = time_pass(build())
                    assert n == n_files, (name, n)
                    wall[name] = min(wall.get(name, float("inf")), seconds)
                    cpu.setdefault(name, []).append(cpu_s)
            cached = ours(cache="memory").plain("train")
            time_pass(cached)  # epoch 1 fills the cache
            cached_wall, cached_cpu, _ = time_pass(cached)

            base = "keras.utils.image_dataset_from_directory"
            base_wall, base_cpu = n_files / wall[base], n_files / statistics.median(cpu[base])
            print(
                f"\noutput {size}x{size}x3 float32, batch {batch}, {n_files} images; best wall pass and median "
                f"CPU time of {args.repeats}; first batch mean |ours - keras| = {diff:.2f} of 255"
            )
            print(f"  {'pipeline':44s} {'images/s':>9s} {'ratio':>6s}   {'images/CPU-s':>12s} {'ratio':>6s}")
            for name in pipelines:
                w, c = n_files / wall[name], n_files / statistics.median(cpu[name])
                print(f"  {name:44s} {w:9.0f} {w / base_wall:5.2f}x   {c:12.0f} {c / base_cpu:5.2f}x")
            w, c = n_files / cached_wall, n_files / max(cached_cpu, 1e-9)
            print(
                f"  {'pipelines, evaluation path, cached epoch 2+':44s} {w:9.0f} {w / base_wall:5.2f}x   "
                f"{c:12.0f} {c / base_cpu:5.2f}x"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
