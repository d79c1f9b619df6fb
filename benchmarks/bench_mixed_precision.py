"""Mixed-precision step time of our EfficientNet against float32, and against keras.applications.

Backend-agnostic (the builders use only keras.layers / keras.ops), so it runs on a GPU
machine that has JAX but no TensorFlow:

    KERAS_BACKEND=jax python benchmarks/bench_mixed_precision.py --variant b0 --batch 128

For each precision policy it times training steps (`train_on_batch`, which returns the
loss to the host, so each step is synchronised) and inference steps of our model and of
`keras.applications.EfficientNetB0` (same resolution, batch and policy), then prints
images/s, the mixed/float32 speed-up and our/keras.applications ratio. Published anchor:
2.85× mixed_float16 over float32 for B0 training on an A100 (NVIDIA DeepLearningExamples).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _time_steps(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def measure(builder_name: str, policy: str, variant: str, batch: int, warmup: int, steps: int) -> dict:
    import keras
    import numpy as np

    from workbench.models import build_model, get_variant

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    resolution = get_variant(variant).resolution
    if builder_name == "workbench":
        model = build_model(variant, 1000)
    else:
        model = getattr(keras.applications, f"EfficientNet{variant.upper()}")(weights=None)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, resolution, resolution, 3)).astype("float32")
    y = rng.integers(0, 1000, (batch,))
    train = _time_steps(lambda: model.train_on_batch(x, y), warmup, steps)
    infer = _time_steps(lambda: np.asarray(model.predict_on_batch(x)), warmup, steps)
    keras.mixed_precision.set_global_policy("float32")
    return {"model": builder_name, "policy": policy, "train_img_s": batch / train, "infer_img_s": batch / infer}


def device_name() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--policies", default="float32,mixed_float16,mixed_bfloat16")
    parser.add_argument(
        "--reference-policies",
        default="float32,mixed_float16",
        help="policies under which keras.applications is also timed",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import keras

    results = []
    for policy in args.policies.split(","):
        builders = ["workbench"] + (["keras.applications"] if policy in args.reference_policies.split(",") else [])
        for builder in builders:
            row = measure(builder, policy, args.variant, args.batch, args.warmup, args.steps)
            results.append(row)
            print(
                f"{builder:<19} {policy:<15} train {row['train_img_s']:8.1f} img/s   infer {row['infer_img_s']:8.1f} img/s",
                flush=True,
            )
    print(f"\nbackend {keras.backend.backend()}, device {device_name()}, {args.variant} batch {args.batch}")
    base = {r["model"]: r for r in results if r["policy"] == "float32"}
    for r in results:
        line = (
            f"{r['model']:<19} {r['policy']:<15} speed-up vs float32: train {r['train_img_s'] / base[r['model']]['train_img_s']:.2f}x "
            f"infer {r['infer_img_s'] / base[r['model']]['infer_img_s']:.2f}x"
        )
        refs = [o for o in results if o["policy"] == r["policy"] and o["model"] == "keras.applications"]
        if refs:
            line += (
                f" | ours/keras.applications: train {r['train_img_s'] / refs[0]['train_img_s']:.2f} "
                f"infer {r['infer_img_s'] / refs[0]['infer_img_s']:.2f}"
            )
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(), "backend": keras.backend.backend(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
