"""int8 calibration size: validation accuracy lost against float32, and conversion time, at 100 / 300 / 1,000 images.

    python benchmarks/bench_int8.py [--data DIR] [--variant lite0] [--time-budget 4m] [--sizes 100,300,1000]
                                    [--run RUN_DIR] [--json OUT]

What it does, in one process (after one `workbench train` child process):
1. Trains the variant with the default recipe (`workbench train DATA --variant lite0 --time-budget 4m`, ImageNet
   weights, no evaluation: the test split stays untouched) unless `--run` names a run already trained that way.
   Default data: the CIFAR-10 subset in ../shared (`_machine.CIFAR_SUBSET`).
2. Converts it to TFLite float32 (the baseline) and, for each calibration size, to full-integer int8 exactly as
   `workbench export --format tflite-int8 --int8-calibration-images N` does (`convert_tflite`,
   `representative_images`), timing each conversion.
3. Measures on the validation split (the split the int8 gate reads) the float32 Keras accuracy (the baseline of the
   drops, as in the gate), the drop of each int8 model overall and in its worst class, and the batch-1 latency of
   every TFLite model against the float32 TFLite one, the models taking turns call by call.

B0 is not measured: its ImageNet weights are not available offline here, and B0 from scratch in 4 minutes would
measure quantising a model that has learnt next to nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import CIFAR_SUBSET, cpu_model
from bench_export_latency import timed_interleaved

ROOT = Path(__file__).resolve().parents[1]


def train(data: Path, variant: str, budget: str, run_dir: Path) -> float:
    """`workbench train` with the default recipe into `run_dir`; returns its wall time in seconds."""
    command = [sys.executable, "-m", "workbench", "train", str(data), "--variant", variant, "--time-budget", budget]
    command += ["--run-dir", str(run_dir), "--no-evaluate", "--no-export", "--seed", "0"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CIFAR_SUBSET)
    parser.add_argument("--variant", default="lite0")
    parser.add_argument("--time-budget", default="4m")
    parser.add_argument("--sizes", default="100,300,1000", help="calibration sizes, comma-separated")
    parser.add_argument("--run", type=Path, default=None, help="a run already trained as step 1 does; skip training")
    parser.add_argument("--runs", type=int, default=30, help="timed batch-1 calls per model")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import numpy as np

    from workbench.serving.formats.tflite import (
        DEFAULT_MAX_INT8_DROP,
        TFLiteClassifier,
        convert_tflite,
        int8_accuracy,
        representative_images,
        worst_classes,
    )
    from workbench.serving.imaging import load_files
    from workbench.serving.model_files import open_run, split_files

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench_int8_"))
    run_dir, train_seconds = args.run, None
    if run_dir is None:
        run_dir = work / "run"
        train_seconds = train(args.data, args.variant, args.time_budget, run_dir)
    run = open_run(run_dir)
    paths, labels = split_files(run, "val")
    images = load_files(paths, run.resolution)
    reference = run.model.predict(images, batch_size=32, verbose=0)
    float_accuracy = float((reference.argmax(1) == np.asarray(labels)).mean())

    start = time.perf_counter()
    float_path = work / "float32.tflite"
    float_path.write_bytes(convert_tflite(run.model, run.resolution, "float32"))
    float_seconds = time.perf_counter() - start
    models = {"float32": TFLiteClassifier(float_path, num_threads=os.cpu_count())}
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        calibration = representative_images(run, size)
        start = time.perf_counter()
        data = convert_tflite(run.model, run.resolution, "int8", calibration)
        seconds = time.perf_counter() - start
        path = work / f"int8_{size}.tflite"
        path.write_bytes(data)
        models[f"int8-{size}"] = model = TFLiteClassifier(path, num_threads=os.cpu_count())
        figures = int8_accuracy(labels, reference, model.predict_images(images), run.class_names)
        worst = worst_classes(figures, 1)
        rows.append(
            {
                "calibration_images": len(calibration),
                "conversion_seconds": round(seconds, 1),
                "int8_accuracy": figures["int8_accuracy"],
                "drop_points": figures["accuracy_drop_points"],
                "worst_class": worst[0] if worst else None,
                "passes_default_gate": figures["accuracy_drop_points"] <= DEFAULT_MAX_INT8_DROP,
                "top1_agreement": figures["top1_agreement"],
                "per_class_drop_points": {k: v["drop_points"] for k, v in figures["per_class"].items()},
            }
        )
    one = images[:1]
    latency = timed_interleaved({name: m.predict_images for name, m in models.items()}, one, args.runs)
    for row in rows:
        seconds = latency[f"int8-{row['calibration_images']}"]
        row["batch1_ms"] = round(1000 * seconds, 2)
        row["speed_vs_float32_tflite"] = round(latency["float32"] / seconds, 2)

    result = {
        "variant": run.variant,
        "resolution": run.resolution,
        "data": str(args.data),
        "run": str(run_dir),
        "train_seconds": None if train_seconds is None else round(train_seconds),
        "val_images": len(labels),
        "baseline": {
            "float32_keras_val_accuracy": round(float_accuracy, 4),
            "float32_tflite_conversion_seconds": round(float_seconds, 1),
            "float32_tflite_batch1_ms": round(1000 * latency["float32"], 2),
        },
        "int8": rows,
        "not_measured": {"b0": "no ImageNet weights offline; B0 from scratch in 4 min learns next to nothing"},
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "note": "shared machine: other workers were loading the CPU; ratios are within one run",
        },
    }
    print(json.dumps(result, indent=2))
    print(f"\n{run.variant} at {run.resolution} px, {len(labels)} val images; float32 accuracy {float_accuracy:.4f}")
    print("calib  drop(pts)  worst class (pts)     convert(s)  batch-1 ms  x float32 TFLite")
    for row in rows:
        worst = f"{row['worst_class'][0]} -{row['worst_class'][1]:.2f}" if row["worst_class"] else "none"
        print(
            f"{row['calibration_images']:>5}  {row['drop_points']:>9.2f}  {worst:<20}  {row['conversion_seconds']:>10.1f}"
            f"  {row['batch1_ms']:>10.2f}  {row['speed_vs_float32_tflite']:>16.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
