"""What a candidate costs, measured on the built model: FLOPs, parameters and latency.

FLOPs follow the models package's convention (multiply-adds counted by `count_macs`, FLOPs =
2 x MACs). Latency is wall time per image at batch 1 on this machine: the median of
`repeats` calls of a traced inference function after two warm-up calls (the first traces the
graph), so it reflects the network and not Python overhead.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Cost:
    resolution: int
    width: float
    depth: float
    params: int
    macs: int
    latency_ms: float

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops}

    def value(self, metric: str) -> float:
        return float(self.as_dict()[metric])


def build(spec, num_classes: int):
    """The candidate at its own resolution, random init (the proxy trains from scratch).

    No head dropout and no stochastic depth: regularisers for long schedules only slow a proxy of a
    few epochs down. The classifier starts at zero, as the engine's new heads do, so the first loss
    is ln(C) rather than the >3x that the 1000-class initialiser gives a few-class head.
    """
    from workbench.engine.heads import zero_head
    from workbench.models import build_model

    model = build_model(
        spec,
        num_classes,
        weights=None,
        input_shape=(spec.resolution, spec.resolution, 3),
        dropout=0.0,
        drop_connect_rate=0.0,
    )
    zero_head(model)
    return model


def latency_ms(model, resolution: int, repeats: int = 20) -> float:
    """Median milliseconds per image at batch 1."""
    import numpy as np
    import tensorflow as tf

    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, resolution, resolution, 3)).astype("float32"))
    for _ in range(2):
        infer(image).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer(image).numpy()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measure(model, spec, repeats: int = 20) -> Cost:
    from workbench.models.flops import count_macs

    return Cost(
        resolution=spec.resolution,
        width=spec.width,
        depth=spec.depth,
        params=int(model.count_params()),
        macs=int(count_macs(model)),
        latency_ms=latency_ms(model, spec.resolution, repeats),
    )
