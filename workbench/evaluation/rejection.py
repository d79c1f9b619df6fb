"""Rejecting images that belong to no class: scores, thresholds chosen for a target, AUROC (NumPy only).

An image is accepted when its score is at least the threshold, else it is "unknown" (index -1). Two scores:

* `max_softmax`: the largest calibrated probability, max softmax(z / T) (Hendrycks & Gimpel 2017);
* `energy`: the negative free energy T * logsumexp(z / T) of the logits z (Liu et al. 2020), which keeps the
  logits' scale that softmax normalises away. Its threshold is in logit units, not a probability.

Higher is "more known" for both. A threshold is chosen on the validation split for one target
(`parse_target`): the accuracy on accepted images, the share of images accepted (coverage), or, with images
of no class, the share of those accepted (false accepts). A threshold that would reject every validation image,
or none, is reported in `Threshold.warning` and not applied (`Threshold.value` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from workbench.evaluation.ood import FEATURE_SCORES

LOGIT_SCORES = ("max_softmax", "energy")
# With the feature-space scores of `workbench.evaluation.ood` (Mahalanobis distances on the pooled features).
SCORES = (*LOGIT_SCORES, *FEATURE_SCORES)
TARGETS = ("accuracy", "coverage", "false-accept")
UNKNOWN_NAME = "unknown"
UNKNOWN_INDEX = -1


def score(logits: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    """The rejection score `kind` (`LOGIT_SCORES`) of each row of `logits` (N, C) at `temperature`; higher = known.
    (The feature scores need the pooled features: `workbench.evaluation.ood.FeatureGaussians.score`.)"""
    if kind not in LOGIT_SCORES:
        raise ValueError(f"unknown logit rejection score {kind!r}; use one of {', '.join(LOGIT_SCORES)}")
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    top = scaled.max(axis=1)
    log_z = np.log(np.exp(scaled - top[:, None]).sum(axis=1)) + top
    if kind == "energy":
        return float(temperature) * log_z
    return np.exp(top - log_z)  # the largest softmax probability


def parse_target(text: str) -> tuple[str, float]:
    """`accuracy:0.95`, `coverage:0.9` or `false-accept:0.05` → (kind, value), or ValueError saying the spelling."""
    kind, _, value = str(text).partition(":")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if kind not in TARGETS or not 0 < number < 1:
        raise ValueError(
            f"--reject-target {text!r} is not KIND:VALUE with KIND one of {', '.join(TARGETS)} and VALUE in (0, 1); "
            "e.g. accuracy:0.95 (accuracy on accepted validation images), coverage:0.9 (share of them accepted) "
            "or false-accept:0.05 (share of --unknown-dir images accepted)"
        )
    return kind, number


def parse_reject(text: str | None) -> float | str:
    """`auto` or `off` as they are, a probability as a float; ValueError for anything else."""
    word = "off" if text is None else str(text).strip().lower()
    if word in ("auto", "off"):
        return word
    try:
        value = float(word)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise ValueError(
            f"--reject {text!r} must be auto (chosen on validation for --reject-target), off, or a probability "
            "in (0, 1): images whose calibrated top probability is below it are answered 'unknown'"
        )
    return value


@dataclass(frozen=True)
class Threshold:
    """A rejection threshold and what it does on the images it was chosen on.

    `value` is None when no threshold is applied (rejection off, or refused: `warning` says why); `accepted`
    and `accuracy_accepted` are measured on the known validation images, `false_accept` on the unknown ones
    (None without them)."""

    value: float | None
    score: str
    target: str | None
    accepted: float
    accuracy_accepted: float | None
    false_accept: float | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _accepted_accuracy(scores: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float | None]:
    accept = scores >= threshold
    return float(accept.mean()), (float(correct[accept].mean()) if accept.any() else None)


def threshold_for_accuracy(scores: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest threshold whose accepted images are at least `target` accurate (most images accepted), or
    +inf when no threshold gets there (even the most confident image alone is wrong)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    running = np.cumsum(correct[order]) / np.arange(1, len(scores) + 1)
    # Only cut between different scores: ties are accepted or rejected together.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    good = np.flatnonzero((running >= target) & last_of_tie)
    return float(sorted_scores[good[-1]]) if len(good) else float("inf")


def threshold_for_coverage(scores: np.ndarray, coverage: float) -> float:
    """The threshold accepting about `coverage` of the images (the ceil(coverage * N) highest scores)."""
    k = max(1, int(np.ceil(coverage * len(scores))))
    return float(np.sort(scores)[::-1][k - 1])


def threshold_for_false_accept(unknown_scores: np.ndarray, rate: float) -> float:
    """The lowest threshold accepting at most `rate` of the unknown images."""
    ordered = np.sort(unknown_scores)[::-1]
    allowed = int(np.floor(rate * len(ordered)))  # this many unknown images may score >= threshold
    if allowed >= len(ordered):
        return float(ordered[-1])
    # Just above the (allowed+1)-th highest unknown score.
    return float(np.nextafter(ordered[allowed], np.inf))


def choose_threshold(
    logits: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    temperature: float,
    *,
    kind: str,
    reject: float | str,
    target: str,
    unknown_logits: np.ndarray | None = None,
) -> Threshold:
    """The threshold `reject` asks for (`parse_reject`: auto, off or a probability) on the `kind` score, from
    validation `logits` (N, C) with true `labels`; `unknown_logits` are those of images of no class, if any.

    A probability is always a threshold on the calibrated top probability (`max_softmax`), whatever `kind` says.
    A threshold that rejects every validation image is not applied (`value` None, `warning` says why); one that
    rejects none is not applied either when `auto` chose it, and applied with a warning when given.
    """
    if isinstance(reject, float):
        kind = "max_softmax"
    correct = np.asarray(logits).argmax(axis=1) == np.asarray(labels)
    has_unknown = unknown_logits is not None and len(unknown_logits) > 0
    unknown = score(unknown_logits, temperature, kind) if has_unknown else None
    return threshold_from_scores(
        score(logits, temperature, kind), correct, kind=kind, reject=reject, target=target, unknown_scores=unknown
    )


def threshold_from_scores(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    kind: str,
    reject: float | str,
    target: str,
    unknown_scores: np.ndarray | None = None,
) -> Threshold:
    """`choose_threshold` from scores already computed: `scores` of the validation images (any score, `kind`
    names it), whether each was classified `correct`ly, and the scores of images of no class, if any."""
    if isinstance(reject, float) and kind != "max_softmax":
        raise ValueError(
            f"--reject {reject:g} is a probability, a threshold on max_softmax, not on {kind}; pass --reject auto "
            f"to choose a {kind} threshold on validation"
        )
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    unknown = None if unknown_scores is None or len(unknown_scores) == 0 else np.asarray(unknown_scores)
    if reject == "off":
        return Threshold(None, kind, None, 1.0, float(correct.mean()), _false_accept(unknown, -np.inf))
    if isinstance(reject, float):
        value, target_text = reject, f"probability:{reject:g}"
    else:
        target_kind, target_value = parse_target(target)
        target_text = target
        if target_kind == "accuracy":
            value = threshold_for_accuracy(scores, correct, target_value)
        elif target_kind == "coverage":
            value = threshold_for_coverage(scores, target_value)
        elif unknown is None:
            raise ValueError(
                f"--reject-target {target} needs images of no class to measure false accepts on; pass --unknown-dir "
                "DIR, or use accuracy:0.95 or coverage:0.9"
            )
        else:
            value = threshold_for_false_accept(unknown, target_value)
    accepted, accuracy = _accepted_accuracy(scores, correct, value)
    warning = None
    if accepted == 0:
        warning = (
            f"the rejection threshold for {target_text} ({kind} >= {value:.4g}) would reject every validation image; "
            "it is not applied. Lower the target (e.g. --reject-target accuracy:0.9) or give a smaller --reject"
        )
    elif accepted == 1 and reject == "auto":
        warning = (
            f"the rejection threshold for {target_text} ({kind} >= {value:.4g}) rejects no validation image, so "
            "validation cannot tell where to put it; it is not applied. Raise the target (e.g. "
            "--reject-target coverage:0.9), or pass --unknown-dir with images of no class"
        )
    elif accepted == 1:
        warning = (
            f"--reject {value:g} rejects no validation image ({kind} >= {value:.4g}); it is applied as given, "
            "but only images less certain than every validation image will be answered 'unknown'"
        )
    applied = None if warning and (accepted == 0 or reject == "auto") else float(value)
    return Threshold(applied, kind, target_text, accepted, accuracy, _false_accept(unknown, value), warning)


def _false_accept(unknown: np.ndarray | None, threshold: float) -> float | None:
    return None if unknown is None else float((unknown >= threshold).mean())


def auroc(known_scores: Sequence[float], unknown_scores: Sequence[float]) -> float:
    """Area under the ROC curve of telling known (positive) from unknown images by score (0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    known, unknown = np.asarray(known_scores), np.asarray(unknown_scores)
    if len(known) == 0 or len(unknown) == 0:
        raise ValueError("AUROC needs both known and unknown images")
    labels = np.concatenate([np.ones(len(known)), np.zeros(len(unknown))])
    return float(roc_auc_score(labels, np.concatenate([known, unknown])))


def decide(logits: np.ndarray, temperature: float, kind: str, threshold: float | None) -> np.ndarray:
    """Class index per row, `UNKNOWN_INDEX` where the score is below `threshold` (None: never). The graphs of
    `workbench.serving.formats` compute the same thing; `workbench predict` uses this for Keras models."""
    index = np.asarray(logits).argmax(axis=1)
    if threshold is None:
        return index
    return np.where(score(logits, temperature, kind) >= threshold, index, UNKNOWN_INDEX)
