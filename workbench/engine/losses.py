"""The losses of multi-label runs: binary cross-entropy, or the asymmetric loss for many negatives.

Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021): with p the sigmoid
probability of a label,

    positive:  -(1 - p)^gamma_pos * log(p)
    negative:  -p_m^gamma_neg * log(1 - p_m),   p_m = max(p - clip, 0)

Easy negatives (small p) are down-weighted by the focusing power and, below `clip`, dropped altogether, so the
many negatives of a multi-label set do not drown the few positives. The paper's defaults: gamma_neg 4, gamma_pos 0,
clip 0.05. Computed in float32 (the head's output is float32 under mixed precision as well).

The loss object lives only while training: `model.keras` is saved from an uncompiled copy
(`workbench.engine.context.fixed_size_model`), so no class of this module ever reaches a saved model's config.
"""

from __future__ import annotations

import keras

LOSSES = ("bce", "asl")
_EPSILON = 1e-7


class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric loss on sigmoid probabilities (targets may be soft: MixUp/CutMix mix multi-hot rows)."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, name: str = "asl", **kw):
        super().__init__(name=name, **kw)
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, "float32")
        p = ops.clip(ops.cast(y_pred, "float32"), _EPSILON, 1.0 - _EPSILON)
        p_m = ops.maximum(p - self.clip, 0.0) if self.clip else p
        positive = y_true * ops.power(1.0 - p, self.gamma_pos) * ops.log(p)
        negative = (1.0 - y_true) * ops.power(p_m, self.gamma_neg) * ops.log(ops.clip(1.0 - p_m, _EPSILON, 1.0))
        return -ops.sum(positive + negative, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "gamma_neg": self.gamma_neg, "gamma_pos": self.gamma_pos, "clip": self.clip}


def multi_label_loss(name: str, label_smoothing: float = 0.0):
    """The loss of a multi-label run: `bce` (label-smoothed like the single-label recipe's) or `asl`."""
    if name == "asl":
        return AsymmetricLoss()
    if name == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    raise ValueError(f"loss={name!r}; use one of {', '.join(LOSSES)}")


def multi_label_metrics(num_labels: int) -> list:
    """Binary accuracy at 0.5 as `accuracy` (so events, checkpoints and early stopping read it as for single-label
    runs) and the mean per-label ROC AUC as `auc`."""
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(name="auc", multi_label=True, num_labels=num_labels),
    ]
