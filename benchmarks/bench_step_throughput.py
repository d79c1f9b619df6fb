"""Training and inference step throughput: our EfficientNet-B0 against keras.applications'.

Both models are built in this process at the same resolution, batch size and precision, with
random weights, and timed in alternating rounds (so a load change on a shared machine hits
both). Reports images/s per model and the ratio ours / keras.applications (goal: >= 1.0).

    python benchmarks/bench_step_throughput.py                     # 224 px, batch 16, float32
    python benchmarks/bench_step_throughput.py --resolution 128 --rounds 3 --steps 3
    python benchmarks/bench_step_throughput.py --precision mixed_float16,float32   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def machine() -> dict:
    import tensorflow as tf
    from _machine import cpu_model

    cpu = cpu_model()

    gpus = [
        tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": gpus,
        "load_average": os.getloadavg(),
        "tensorflow": tf.__version__,
    }


def build_pair(resolution: int, classes: int):
    import keras

    from workbench.models import build_model

    ours = build_model("b0", num_classes=classes, weights=None, input_shape=(resolution, resolution, 3))
    theirs = keras.applications.EfficientNetB0(weights=None, classes=classes, input_shape=(resolution, resolution, 3))
    for model in (ours, theirs):
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="categorical_crossentropy")
    return {"ours": ours, "keras.applications": theirs}


def time_steps(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    # Keras returns host values from train_on_batch / predict_on_batch: the device is done.
    del out
    return time.perf_counter() - start


def bench(precision: str, resolution: int, batch: int, steps: int, rounds: int, classes: int) -> dict:
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        models = build_pair(resolution, classes)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (batch, resolution, resolution, 3)).astype("float32")
        y = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]
        results = {}
        for mode in ("train", "inference"):
            seconds = {name: 0.0 for name in models}

            def step_for(model, mode=mode):
                if mode == "train":
                    return lambda: model.train_on_batch(x, y)
                return lambda: model.predict_on_batch(x)

            for model in models.values():  # trace and warm up outside the timing
                time_steps(step_for(model), 2)
            for round_index in range(rounds):
                # alternate which model goes first, so neither always runs on a freshly warmed cache
                order = list(models.items())
                for name, model in order if round_index % 2 == 0 else order[::-1]:
                    seconds[name] += time_steps(step_for(model), steps)
            images = batch * steps * rounds
            per_s = {name: images / s for name, s in seconds.items()}
            results[mode] = {
                "images_per_s": per_s,
                "ratio_ours_over_keras": per_s["ours"] / per_s["keras.applications"],
            }
        return results
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per model")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--precision", default="float32", help="comma-separated policies, e.g. mixed_float16,float32")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    report = {
        "benchmark": "step_throughput",
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "results": {},
    }
    for precision in args.precision.split(","):
        report["results"][precision] = bench(
            precision, args.resolution, args.batch, args.steps, args.rounds, args.classes
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, GPUs: {m['gpus'] or 'none'}, "
        f"load average {m['load_average'][0]:.1f}, TensorFlow {m['tensorflow']}"
    )
    print(f"B0 at {args.resolution} px, batch {args.batch}, {args.rounds} rounds x {args.steps} steps per model")
    for precision, modes in report["results"].items():
        for mode, r in modes.items():
            ips = r["images_per_s"]
            print(
                f"  {precision:15s} {mode:9s} ours {ips['ours']:8.1f} img/s   keras.applications "
                f"{ips['keras.applications']:8.1f} img/s   ratio {r['ratio_ours_over_keras']:.3f}"
            )
    if len(report["results"]) > 1 and "float32" in report["results"]:
        base = report["results"]["float32"]
        for precision, modes in report["results"].items():
            if precision != "float32":
                for mode in modes:
                    speedup = modes[mode]["images_per_s"]["ours"] / base[mode]["images_per_s"]["ours"]
                    print(f"  ours {mode}: {precision} / float32 = {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
