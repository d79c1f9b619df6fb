"""Numeric precision: pick a Keras dtype policy, hold it for one run, then restore the old one.

Mixed precision computes in float16/bfloat16 and keeps variables in float32. The head's
`predictions` layer is built with `dtype="float32"` (workbench.models), so probabilities and
the loss stay float32. Under float16 the loss is scaled (Keras `LossScaleOptimizer`) so small
gradients do not underflow; bfloat16 has float32's exponent range and needs no scaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from workbench.engine.config import PRECISIONS

# Tensor cores, which make float16 fast, arrived with compute capability 7.0 (Volta).
MIN_FLOAT16_COMPUTE_CAPABILITY = (7, 0)


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def resolve_precision(precision: str) -> str:
    """`auto` -> `mixed_float16` when every visible GPU has compute capability >= 7.0, else
    `float32` (on CPU float16 is emulated and slower than float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    capabilities = gpu_compute_capabilities()
    if capabilities and min(capabilities) >= MIN_FLOAT16_COMPUTE_CAPABILITY:
        return "mixed_float16"
    return "float32"


@contextmanager
def precision_policy(precision: str) -> Iterator[str]:
    """Set the global Keras dtype policy for the block (models must be built inside it) and
    restore the previous policy afterwards, even on error. Yields the resolved policy name."""
    import keras

    resolved = resolve_precision(precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolved)
    try:
        yield resolved
    finally:
        keras.mixed_precision.set_global_policy(previous)


def wrap_optimizer(optimizer, policy: str):
    """Loss scaling under float16 (dynamic, Keras's defaults)."""
    import keras

    if policy == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
