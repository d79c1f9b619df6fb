"""Multi-label models at serving time: the thresholds an export carries, and the labels each answer holds.

A run's kind is its head (`workbench.engine.heads.is_multi_label`); its per-label thresholds are the run's
`thresholds.json` (tuned on validation). Every export's model card holds them (`multi_label`); the SavedModel
also has them in its graph (`savedmodel.MULTI_LABEL_SIGNATURES`). `workbench predict` reads them back from
beside the model (`thresholds.json` in a run directory, else the model card) for every format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def run_thresholds(run) -> np.ndarray | None:
    """The per-label thresholds of a multi-label run (`DEFAULT_THRESHOLD` each when it has no thresholds.json), or
    None for a single-label run."""
    from workbench.engine.heads import is_multi_label
    from workbench.evaluation.multilabel import DEFAULT_THRESHOLD, read_thresholds

    if not is_multi_label(run.model):
        return None
    thresholds = read_thresholds(run.path, run.class_names)
    return thresholds if thresholds is not None else np.full(len(run.class_names), DEFAULT_THRESHOLD, np.float32)


def multi_label_card(run, fmt) -> dict | None:
    """The model card's `multi_label` entry: thresholds by label, and whether the graph applies them."""
    thresholds = run_thresholds(run)
    if thresholds is None:
        return None
    return {
        "thresholds": {name: float(t) for name, t in zip(run.class_names, thresholds, strict=True)},
        "tuned_on": "val",
        "in_graph": fmt.kind == "savedmodel",
    }


def thresholds_beside(labels_path: str | Path, class_names: list[str]) -> np.ndarray | None:
    """The thresholds of the model whose labels.txt is `labels_path`: its run's `thresholds.json`, or its export's
    model card; None when neither says the model is multi-label."""
    from workbench.evaluation.multilabel import read_thresholds

    folder = Path(labels_path).parent
    thresholds = read_thresholds(folder, class_names)
    if thresholds is not None:
        return thresholds
    card = folder / "model_card.json"
    if not card.is_file():
        return None
    entry = json.loads(card.read_text(encoding="utf-8")).get("multi_label")
    if not entry:
        return None
    return np.asarray([entry["thresholds"][name] for name in class_names], np.float32)


def labels_over(row: np.ndarray, thresholds: np.ndarray, class_names: list[str]) -> list[dict]:
    """The labels of one probability row at or over their thresholds, most probable first."""
    order = np.argsort(-row, kind="stable")
    return [
        {"class": class_names[i], "index": int(i), "probability": float(row[i]), "threshold": float(thresholds[i])}
        for i in order
        if row[i] >= thresholds[i]
    ]
