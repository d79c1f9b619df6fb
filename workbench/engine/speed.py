"""How fast this machine runs a variant: the measurement the automatic recipe plans with.

A few forward batches of the variant at the chosen resolution, with random weights (the arithmetic, hence
the speed, does not depend on the values) and random pixels, after one warm-up batch that pays for tracing.
This costs seconds, never an epoch; during the run the feature pass and every epoch are timed again
(`events.jsonl` has their images/s), and `BudgetGuard` acts on those real times.
"""

from __future__ import annotations

import time

from workbench.engine.auto import Speed

PROBE_BATCHES = 2


def measure_speed(variant: str, resolution: int, batch_size: int, *, num_classes: int = 2) -> Speed:
    """Inference images/s of `variant` at `resolution` in batches of `batch_size` (under the active dtype
    policy, like the run)."""
    import numpy as np

    from workbench.models import build_model

    model = build_model(variant, num_classes=num_classes, weights=None, input_shape=(resolution, resolution, 3))
    images = np.random.default_rng(0).uniform(0, 255, (batch_size, resolution, resolution, 3)).astype("float32")
    model.predict_on_batch(images)  # warm-up: traces the graph
    start = time.perf_counter()
    for _ in range(PROBE_BATCHES):
        model.predict_on_batch(images)
    seconds = time.perf_counter() - start
    return Speed(resolution=resolution, forward_images_per_s=PROBE_BATCHES * batch_size / max(seconds, 1e-9))
