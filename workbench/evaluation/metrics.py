"""The evaluation report as plain data: confusion matrices, per-class metrics, top-k, worst mistakes.

Everything here is pure NumPy / scikit-learn on arrays (no TensorFlow), so it is cheap to test and the
numbers in `report.json` come from one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def compute_report(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str] | None = None,
    top_k: int = 5,
    max_pairs: int = 10,
    max_examples: int = 16,
) -> dict:
    """Build the evaluation report from true label indices and predicted probabilities.

    Args:
        y_true: true class index per example, shape (N,).
        probabilities: predicted class probabilities, shape (N, C), rows summing to 1.
        class_names: the C class names in index order (the run's `labels.txt`).
        paths: the file path of each example (for the misclassified list), or None.
        top_k: k of the top-k accuracy (clipped to C).
        max_pairs: how many most-confused (true, predicted) pairs to list.
        max_examples: how many highest-loss misclassified examples to list.

    Returns:
        A JSON-serialisable dict (see `evaluate` in this package for the keys).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix

    y_true, probabilities = _checked_arrays(y_true, probabilities, len(class_names))
    num_classes = len(class_names)
    labels = list(range(num_classes))
    y_pred = probabilities.argmax(axis=1)

    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    # Row-normalised: the share of each true class that went to each predicted class. Rows of
    # classes absent from the split stay zero instead of dividing by zero.
    normalised = np.divide(matrix, support[:, None], out=np.zeros(matrix.shape), where=support[:, None] > 0)

    per_class, averages = _class_metrics(y_true, y_pred, class_names)
    k, top_k_accuracy = _top_k_accuracy(y_true, y_pred, probabilities, top_k)

    # Cross-entropy of each example: the loss the model was trained on, so "highest loss" means
    # "most confidently wrong".
    true_probability = probabilities[np.arange(len(y_true)), y_true]
    losses = -np.log(np.clip(true_probability, 1e-12, 1.0))

    return {
        "num_examples": len(y_true),
        "num_classes": num_classes,
        "classes": list(class_names),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "top_k": k,
        "top_k_accuracy": top_k_accuracy,
        "mean_loss": float(losses.mean()),
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_normalized": normalised.round(6).tolist(),
        "per_class": per_class,
        "macro_avg": averages["macro"],
        "weighted_avg": averages["weighted"],
        "most_confused": _most_confused(matrix, normalised, class_names, max_pairs),
        # Per image, in input order (the split's manifest order): what the app's confusion-matrix cells open.
        "predicted_index": y_pred.tolist(),
        "predicted_probability": probabilities[np.arange(len(y_pred)), y_pred].round(4).tolist(),
        "misclassified": _misclassified(
            y_true, y_pred, probabilities, true_probability, losses, class_names, paths, max_examples
        ),
    }


def calibration_report(
    logits: np.ndarray, y_true: Sequence[int] | np.ndarray, calibration, features: np.ndarray | None = None
) -> dict:
    """The report's `calibration` and `rejection` parts for `logits` (N, C) with true labels `y_true`.

    `calibration` is the run's fitted `workbench.evaluation.calibrate.Calibration`, or None (temperature 1 and
    no rejection: what an uncalibrated export serves). ECE before is at temperature 1, after at the fitted one;
    the reliability bins of both feed the diagram. `features`: the images' pooled features, which a feature
    rejection score (`calibration.needs_features`) takes.
    """
    from workbench.evaluation.calibration import ECE_BINS, reliability, softmax

    y_true = np.asarray(y_true, dtype=np.int64)
    temperature = 1.0 if calibration is None else calibration.temperature
    before = reliability(softmax(logits), y_true)
    after = reliability(softmax(logits, temperature), y_true)
    parts: dict = {
        "calibration": {
            "fitted": calibration is not None,
            "temperature": temperature,
            "bins": ECE_BINS,
            "ece_before": before["ece"],
            "ece_after": after["ece"],
            "reliability_before": before["bins"],
            "reliability_after": after["bins"],
        },
        "rejection": None,
    }
    if calibration is not None and calibration.threshold is not None:
        accept = calibration.scores(logits, features) >= calibration.threshold
        correct = np.asarray(logits).argmax(axis=1) == y_true
        parts["rejection"] = {
            "score": calibration.score,
            "threshold": calibration.threshold,
            "accepted": float(accept.mean()),
            "accuracy_accepted": float(correct[accept].mean()) if accept.any() else None,
            "accuracy_all": float(correct.mean()),
        }
    return parts


def unknown_report(
    logits: np.ndarray,
    unknown_logits: np.ndarray,
    folder,
    report: dict,
    *,
    calibration=None,
    features: np.ndarray | None = None,
    unknown_features: np.ndarray | None = None,
) -> dict:
    """The report's `unknown` part: AUROC of the known images (`logits`) against images of no class
    (`unknown_logits`) for the logit scores, and for the feature scores of its fit too when `calibration` holds
    the feature statistics (`gaussians`) and the pooled `features` of both are given; and, under the report's
    threshold, the share of unknown images rejected."""
    from workbench.evaluation.ood import FEATURE_SCORES, normalised_for
    from workbench.evaluation.rejection import LOGIT_SCORES, auroc, score

    temperature = report["calibration"]["temperature"]
    aurocs = {
        kind: auroc(score(logits, temperature, kind), score(unknown_logits, temperature, kind)) for kind in LOGIT_SCORES
    }
    gaussians = None if calibration is None else calibration.gaussians
    if gaussians is not None and features is not None and unknown_features is not None:
        for kind in (k for k in FEATURE_SCORES if normalised_for(k) == gaussians.normalised):
            aurocs[kind] = auroc(gaussians.score(features, kind), gaussians.score(unknown_features, kind))
    part: dict = {"dir": str(folder), "num_images": len(unknown_logits), "auroc": aurocs, "rejected": None}
    rejection = report.get("rejection")
    if rejection is not None:
        unknown = calibration.scores(unknown_logits, unknown_features)
        part["rejected"] = float((unknown < rejection["threshold"]).mean())
    return part


def _checked_arrays(y_true, probabilities, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The labels as int64 and the probabilities as float64, or a ValueError naming what is wrong."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape != (len(y_true), num_classes):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected ({len(y_true)}, {num_classes}) "
            "(one row per example, one column per class name)"
        )
    if len(y_true) == 0:
        raise ValueError("the evaluation split is empty: there are no images to evaluate")
    return y_true, probabilities


def _class_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> tuple[dict, dict]:
    """Precision, recall, F1 and support per class, and their macro and weighted averages."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return per_class, averages


def _top_k_accuracy(y_true: np.ndarray, y_pred: np.ndarray, probabilities: np.ndarray, top_k: int) -> tuple[int, float]:
    """The k actually used (clipped to [1, C]) and the top-k accuracy for it."""
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    num_classes = probabilities.shape[1]
    k = max(1, min(int(top_k), num_classes))
    if k >= num_classes:
        return k, 1.0  # every class is in the top k: trivially right.
    if num_classes == 2:
        # With two classes, k < C means k == 1: top-1 accuracy is plain accuracy.
        return k, float(accuracy_score(y_true, y_pred))
    return k, float(top_k_accuracy_score(y_true, probabilities, k=k, labels=list(range(num_classes))))


def _most_confused(matrix: np.ndarray, normalised: np.ndarray, class_names: Sequence[str], max_pairs: int) -> list:
    """The off-diagonal (true, predicted) cells with the highest counts, most first, zeros left out."""
    pairs = []
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")
    for flat in order[:max_pairs]:
        t, p = np.unravel_index(flat, matrix.shape)
        count = int(off_diagonal[t, p])
        if count == 0:
            break
        pairs.append(
            {
                "true": class_names[t],
                "predicted": class_names[p],
                "count": count,
                "fraction_of_true": float(normalised[t, p]),
            }
        )
    return pairs


def _misclassified(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    true_probability: np.ndarray,
    losses: np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str] | None,
    max_examples: int,
) -> list:
    """The wrongly predicted examples with the highest loss, worst first (ties keep input order)."""
    wrong = np.flatnonzero(y_pred != y_true)
    worst = wrong[np.argsort(-losses[wrong], kind="stable")][:max_examples]
    return [
        {
            "path": None if paths is None else str(paths[i]),
            "true": class_names[y_true[i]],
            "predicted": class_names[y_pred[i]],
            "confidence": float(probabilities[i, y_pred[i]]),
            "true_probability": float(true_probability[i]),
            "loss": float(losses[i]),
        }
        for i in worst
    ]


def summary_table(report: dict) -> str:
    """A plain-text table of the per-class metrics and the headline numbers, for the terminal."""
    names = report["classes"]
    width = max(10, *(len(n) for n in names))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name in names:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}"
        )
    macro = report["macro_avg"]
    lines.append(
        f"{'macro avg':<{width}}  {macro['precision']:9.3f}  {macro['recall']:6.3f}  {macro['f1']:5.3f}  "
        f"{report['num_examples']:7d}"
    )
    lines.append("")
    lines.append(
        f"top-1 accuracy {report['accuracy']:.4f}   top-{report['top_k']} accuracy {report['top_k_accuracy']:.4f}   "
        f"mean loss {report['mean_loss']:.4f}   images {report['num_examples']}"
    )
    lines.extend(_calibration_lines(report))
    if report["most_confused"]:
        confused = ", ".join(f"{p['true']}→{p['predicted']} ({p['count']})" for p in report["most_confused"][:5])
        lines.append(f"most confused: {confused}")
    return "\n".join(lines)


def _calibration_lines(report: dict) -> list[str]:
    """ECE before and after temperature scaling, the rejection threshold's effect and the AUROC on unknown images."""
    calibration = report.get("calibration")
    if not calibration:
        return []
    if calibration["fitted"]:
        line = (
            f"calibration: temperature {calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} "
            f"before, {calibration['ece_after']:.4f} after"
        )
    else:
        line = f"calibration: not fitted (no calibration.json), ECE {calibration['ece_before']:.4f}"
    lines = [line]
    rejection = report.get("rejection")
    if rejection:
        accuracy = rejection["accuracy_accepted"]
        lines.append(
            f"rejection: {rejection['score']} >= {rejection['threshold']:.4g} accepts {rejection['accepted']:.1%} "
            f"of these images, accuracy on them {'n/a' if accuracy is None else f'{accuracy:.4f}'}"
        )
    unknown = report.get("unknown")
    if unknown:
        aurocs = ", ".join(f"{kind} {value:.4f}" for kind, value in unknown["auroc"].items())
        rejected = "" if unknown["rejected"] is None else f", {unknown['rejected']:.1%} of them rejected"
        lines.append(f"unknown images: {unknown['num_images']}, AUROC known vs unknown {aurocs}{rejected}")
    return lines
