"""The optimiser every training loop of the workbench uses: AdamW with linear warmup, then cosine decay.

One builder for the fine-tuning recipe (`workbench.engine.recipe`) and the scaling search's proxy
training (`workbench.scaling_search.proxy`), so both follow the same schedule by construction.
"""

from __future__ import annotations


def warmup_cosine(learning_rate: float, total_steps: int, warmup_fraction: float):
    """A learning-rate schedule over `total_steps` optimizer steps: linear from 0 to `learning_rate`
    over the first `warmup_fraction` of them, then cosine decay to 0 (no warmup when that is 0 steps)."""
    import keras

    warmup = int(warmup_fraction * total_steps)
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=max(total_steps - warmup, 1),
            warmup_target=learning_rate,
            warmup_steps=warmup,
        )
    return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(total_steps, 1))


def adamw(learning_rate: float, total_steps: int, *, warmup_fraction: float, weight_decay: float):
    """`keras.optimizers.AdamW` on the `warmup_cosine` schedule (peak `learning_rate`)."""
    import keras

    schedule = warmup_cosine(learning_rate, total_steps, warmup_fraction)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
