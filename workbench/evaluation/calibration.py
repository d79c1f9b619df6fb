"""Temperature scaling and expected calibration error, on plain arrays (NumPy and SciPy, no TensorFlow).

Temperature scaling (Guo et al. 2017) divides the logits by one number T fitted on the validation split to
minimise the negative log-likelihood: T > 1 softens an over-confident model, T < 1 sharpens an under-confident
one. The argmax, so the accuracy, never changes. ECE is the gap between confidence and accuracy, averaged over
15 equal-width confidence bins weighted by their share of images (the paper's definition).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ECE_BINS = 15
# The fitted temperature is searched in [1/20, 20]: wider than any network the paper measured (about 1 to 4),
# narrow enough that a degenerate split (every image right with margin) cannot push it to infinity.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, computed stably in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log(p): the logits up to a per-row constant, which softmax ignores (so temperature scaling of these is
    exact). Energy scores need the model's own logits (`workbench.engine.heads.logits_model`) instead."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of the true labels under `softmax(logits / temperature)`."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_z - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """The temperature minimising the validation NLL of `logits` (N, C) with true `labels` (N,).

    A one-parameter convex problem in log T, solved by bounded Brent search (`TEMPERATURE_BOUNDS`).
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"temperature scaling needs logits (N, C) and N labels, got {logits.shape} and {labels.shape}; "
            "the validation split must hold images"
        )
    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def reliability(probabilities: np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per-bin confidence, accuracy and count of the top-1 predictions, and the ECE over them.

    Bins are equal-width on (0, 1]; a confidence of exactly 1 falls in the last bin. Empty bins have count 0
    and null confidence and accuracy (JSON-friendly).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        if count:
            mean_confidence, accuracy = float(confidence[mask].mean()), float(correct[mask].mean())
            ece += count / len(labels) * abs(mean_confidence - accuracy)
        else:
            mean_confidence = accuracy = None
        row = {"low": b / bins, "high": (b + 1) / bins, "count": count}
        rows.append({**row, "confidence": mean_confidence, "accuracy": accuracy})
    return {"bins": rows, "ece": float(ece)}


def expected_calibration_error(
    probabilities: np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE of the top-1 confidence over `bins` equal-width bins (15 by default, as in Guo et al.)."""
    return reliability(probabilities, labels, bins)["ece"]
