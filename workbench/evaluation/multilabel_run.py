"""`evaluate` for a multi-label run: predictions on the split, the report of `multilabel`, its JSON and PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def targets_for(records: list, class_names: list[str], source) -> np.ndarray:
    """(N, C) multi-hot rows of `records` in the model's label order; labels the model lacks are refused."""
    from pipelines.manifest import record_labels

    index = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(records), len(class_names)), np.float32)
    for row, record in enumerate(records):
        for label in record_labels(record):
            if label not in index:
                raise ValueError(
                    f"{source}: label {label!r} of {record.path} is not among the model's labels {class_names}; "
                    "evaluate on data labelled with the names in the run's labels.txt"
                )
            targets[row, index[label]] = 1.0
    return targets


def predict_split(run, manifest, used: list[str], batch_size: int) -> np.ndarray:
    """The model's probabilities (N, C) on the `used` splits, in manifest order (the plain evaluation path)."""
    from pipelines import make_datasets

    datasets = make_datasets(manifest, image_size=run.resolution, batch_size=batch_size, augment="none")
    rows = [run.model.predict_on_batch(images) for split in used for images, _ in datasets.plain(split)]
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, len(run.class_names)), np.float32)


def evaluate_multi_label(run, manifest, records, used, eval_dir: Path, data, split: str, batch_size: int, plots: bool):
    """Write `report.json` and the PNGs of a multi-label run's evaluation into `eval_dir`; return the report."""
    from workbench.evaluation import provenance, write_report
    from workbench.evaluation.multilabel import DEFAULT_THRESHOLD, multilabel_report, read_thresholds

    thresholds = read_thresholds(run.path, run.class_names)
    tuned = thresholds is not None
    if thresholds is None:  # a run from before thresholds.json, or trained elsewhere
        thresholds = np.full(len(run.class_names), DEFAULT_THRESHOLD, np.float32)
    y_true = targets_for(records, run.class_names, data or run.manifest_path)
    probabilities = predict_split(run, manifest, used, batch_size)
    report = multilabel_report(y_true, probabilities, thresholds, run.class_names, [r.path for r in records])
    report.update({"thresholds_tuned": tuned} | provenance(run, manifest, data, split))
    files = {"report": str(eval_dir / "report.json")}
    if plots:
        from workbench.evaluation.multilabel_plots import (
            plot_cooccurrence,
            plot_label_matrices,
            plot_mistakes,
            plot_per_label,
        )

        files["per_label"] = str(plot_per_label(report, eval_dir / "per_label.png"))
        files["label_matrices"] = str(plot_label_matrices(report, eval_dir / "label_matrices.png"))
        files["cooccurrence"] = str(plot_cooccurrence(report, eval_dir / "cooccurrence.png"))
        files["mistakes"] = str(plot_mistakes(report, eval_dir / "mistakes.png"))
    return write_report(report, files, eval_dir)
