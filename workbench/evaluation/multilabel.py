"""Multi-label runs: per-label thresholds tuned on validation, and the multi-label report (pure, NumPy + sklearn).

A multi-label model answers every label on its own (sigmoid probabilities); a label is predicted when its
probability reaches that label's threshold. `tune_thresholds` picks each threshold to maximise the label's F1 on
the validation split; the engine saves them as `thresholds.json` after training, exports put them into their graphs
and model cards, and `evaluate` scores the test split with them (`multilabel_report`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

THRESHOLDS_FILE = "thresholds.json"
# A label with no positive (or no negative) validation image cannot be tuned: it keeps this threshold.
DEFAULT_THRESHOLD = 0.5
MISTAKES_SHOWN = 20


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float | None]:
    """(threshold, its F1) maximising F1 of `scores >= threshold` against binary `y_true` (one label).

    Every cut between two distinct sorted scores is tried; the threshold is the midpoint of the cut, so a score
    equal to a validation score is decided as it was. Without a positive and a negative: (`DEFAULT_THRESHOLD`,
    None). Ties of F1 go to the cut nearest `DEFAULT_THRESHOLD`.
    """
    y_true = np.asarray(y_true, bool)
    scores = np.asarray(scores, np.float64)
    positives = int(y_true.sum())
    if positives == 0 or positives == len(y_true):
        return DEFAULT_THRESHOLD, None
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_true = scores[order], y_true[order]
    tp = np.cumsum(sorted_true)
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2 * tp / (predicted + positives)
    # Only cuts after the last of a run of equal scores are real thresholds.
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    below = np.r_[sorted_scores[1:], sorted_scores[-1] - 1e-6]
    cuts = np.flatnonzero(last)
    thresholds = (sorted_scores[cuts] + np.maximum(below[cuts], 0.0)) / 2
    values = f1[cuts]
    best = np.flatnonzero(np.isclose(values, values.max()))
    chosen = best[np.argmin(np.abs(thresholds[best] - DEFAULT_THRESHOLD))]
    return float(thresholds[chosen]), float(values[chosen])


def tune_thresholds(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, list[float | None]]:
    """Per-label thresholds (C,) maximising each label's F1 on (N, C) targets and probabilities, and those F1s."""
    pairs = [best_f1_threshold(y_true[:, k], probabilities[:, k]) for k in range(y_true.shape[1])]
    return np.array([t for t, _ in pairs], np.float32), [f for _, f in pairs]


def write_thresholds(
    run_dir: str | Path, class_names: list[str], thresholds: np.ndarray, f1: list[float | None], num_val: int
) -> Path:
    """`thresholds.json` of a run: one threshold per label (label order = labels.txt) and its validation F1."""
    from pipelines.files import atomic_write_text

    record = {
        "labels": list(class_names),
        "thresholds": [float(t) for t in thresholds],
        "val_f1": f1,
        "num_val": num_val,
        "tuned_on": "val",
        "default_threshold": DEFAULT_THRESHOLD,
    }
    path = Path(run_dir) / THRESHOLDS_FILE
    atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def read_thresholds(run_dir: str | Path, class_names: list[str] | None = None) -> np.ndarray | None:
    """The run's per-label thresholds (C,), or None when it has no `thresholds.json` (not a multi-label run)."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if class_names is not None and record["labels"] != list(class_names):
        raise ValueError(
            f"{path} holds thresholds for labels {record['labels']}, but the model's are {class_names}; "
            "train the run again (its files do not belong together)"
        )
    return np.asarray(record["thresholds"], np.float32)


def over_threshold(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, C) bool: the labels predicted (probability at or over the label's threshold)."""
    return np.asarray(probabilities) >= np.asarray(thresholds)[None, :]


def multilabel_report(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    thresholds: np.ndarray,
    class_names: list[str],
    paths: list[str],
) -> dict:
    """The multi-label report: mAP, micro and macro F1, per-label precision/recall/F1/support/AP and 2x2 matrix,
    label co-occurrence (true labels), and the most confident mistakes (image, label) first.

    mAP and macro F1 average over the labels with at least one positive (others have no AP and are listed in
    `labels_without_positives`)."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(bool)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = over_threshold(probabilities, thresholds)
    scored = [k for k in range(len(class_names)) if y_true[:, k].any()]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, average=None, zero_division=0)
    per_label, matrices = {}, {}
    for k, name in enumerate(class_names):
        t, p = y_true[:, k], predicted[:, k]
        ap = float(average_precision_score(t, probabilities[:, k])) if k in scored else None
        per_label[name] = {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "average_precision": ap,
            "threshold": float(thresholds[k]),
        }
        matrices[name] = {
            "tp": int((t & p).sum()),
            "fp": int((~t & p).sum()),
            "fn": int((t & ~p).sum()),
            "tn": int((~t & ~p).sum()),
        }
    aps = [per_label[class_names[k]]["average_precision"] for k in scored]
    macro = [per_label[class_names[k]]["f1"] for k in scored]
    cooccurrence = (y_true.T.astype(int) @ y_true.astype(int)).tolist()
    return {
        "kind": "multi-label",
        "num_examples": len(y_true),
        "classes": list(class_names),
        "mAP": float(np.mean(aps)) if aps else None,
        "micro_f1": float(f1_score(y_true, predicted, average="micro", zero_division=0)),
        "macro_f1": float(np.mean(macro)) if macro else None,
        "subset_accuracy": float(np.mean((y_true == predicted).all(axis=1))) if len(y_true) else None,
        "empty_label_sets": int((~y_true.any(axis=1)).sum()),
        "labels_without_positives": [class_names[k] for k in range(len(class_names)) if k not in scored],
        "per_label": per_label,
        "label_matrices": matrices,
        "cooccurrence": cooccurrence,
        "mistakes": most_confident_mistakes(y_true, probabilities, predicted, class_names, paths),
    }


def most_confident_mistakes(
    y_true: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, class_names: list[str], paths: list[str]
) -> list[dict]:
    """(image, label) decisions that were wrong, the most confident first: a false positive's confidence is its
    probability, a false negative's is one minus it."""
    wrong = np.argwhere(y_true != predicted)
    confidence = np.where(predicted, probabilities, 1 - probabilities)
    order = sorted(wrong.tolist(), key=lambda ik: -confidence[ik[0], ik[1]])[:MISTAKES_SHOWN]
    return [
        {
            "path": paths[i],
            "label": class_names[k],
            "kind": "false positive" if predicted[i, k] else "false negative",
            "probability": float(probabilities[i, k]),
            "confidence": float(confidence[i, k]),
            "true_labels": [class_names[j] for j in np.flatnonzero(y_true[i])],
            "predicted_labels": [class_names[j] for j in np.flatnonzero(predicted[i])],
        }
        for i, k in order
    ]


def summary_lines(report: dict) -> list[str]:
    """The report as a terminal table: the headline figures, then one row per label."""

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"{report['num_examples']} images, {len(report['classes'])} labels (multi-label); "
        f"mAP {fmt(report['mAP'])}, micro F1 {fmt(report['micro_f1'])}, macro F1 {fmt(report['macro_f1'])}, "
        f"exact-set accuracy {fmt(report['subset_accuracy'])}",
    ]
    width = max(5, *(len(name) for name in report["classes"]))
    lines.append(f"  {'label':<{width}}  {'thr':>5} {'prec':>6} {'recall':>6} {'f1':>6} {'AP':>6} {'support':>7}")
    for name, row in report["per_label"].items():
        ap = "   n/a" if row["average_precision"] is None else f"{row['average_precision']:6.3f}"
        lines.append(
            f"  {name:<{width}}  {row['threshold']:5.2f} {row['precision']:6.3f} {row['recall']:6.3f} "
            f"{row['f1']:6.3f} {ap} {row['support']:>7}"
        )
    return lines
