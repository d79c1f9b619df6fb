"""Measure training speed of a variant on this machine: `python -m apps.speed VARIANT --image-size 160`.

Prints JSON: images per second of full training steps (forward, backward and AdamW update of every
layer, the costlier phase 2 case) on random images, after warm-up steps that absorb graph tracing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def measure(variant: str, image_size: int, batch_size: int, num_classes: int, steps: int = 3) -> dict:
    import keras
    import numpy as np

    from workbench.models import build_model

    model = build_model(variant, num_classes, input_shape=(image_size, image_size, 3))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, num_classes, batch_size), num_classes)
    for _ in range(2):  # warm-up: the first steps trace and compile the graph
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    seconds = (time.perf_counter() - start) / steps
    return {
        "variant": variant,
        "image_size": image_size,
        "batch_size": batch_size,
        "seconds_per_step": seconds,
        "images_per_s": batch_size / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.speed", description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("--image-size", type=int, required=True, help="input resolution in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        result = measure(args.variant, args.image_size, args.batch_size, args.num_classes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
