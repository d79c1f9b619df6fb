"""Evaluate a trained run on a held-out split: report.json, plots and a terminal summary.

```python
from workbench.evaluation import evaluate
report = evaluate("runs/r1")                  # the run's own test split
report = evaluate("runs/r1", data="new/", split="test")
```

Images come from `pipelines.make_datasets(...).plain(split)`: the deterministic evaluation path
(centre crop, no augmentation, manifest order), so row i of the predictions is record i of the split
and every number can be traced back to a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

from workbench.evaluation.metrics import calibration_report, compute_report, summary_table, unknown_report

__all__ = ["EVAL_SPLITS", "compute_report", "evaluate", "summary_table", "tta_summary"]

EVAL_SPLITS = ("train", "val", "test", "all")


def output_dir(run_dir: str | Path, data=None, split: str = "test") -> Path:
    """Where a report goes: `eval/` for the run's own test split (the one model cards quote), else a
    sub-folder named for the data and split (`eval/val/`, `eval/<data name>-all/`), so evaluating other
    data never replaces the run's own report."""
    eval_dir = Path(run_dir) / "eval"
    if data is None:
        return eval_dir if split == "test" else eval_dir / split
    name = str(data).rstrip("/\\").replace("tfds:", "tfds-")
    return eval_dir / f"{Path(name).name or 'data'}-{split}"


def _manifest(run, data, eval_dir: Path):
    from pipelines import Manifest, ingest

    if data is None:
        if run.manifest_path is None:
            raise ValueError(
                f"{run.path}: the run has no manifest.json, so its test split is unknown; pass the data to "
                "evaluate on with --data"
            )
        return Manifest.load(run.manifest_path)
    # A separate work directory: ingest writes a manifest.json, which must not replace the run's own.
    manifest = ingest(data, workdir=eval_dir / "data")
    unknown = sorted(set(manifest.classes) - set(run.class_names))
    if unknown:
        raise ValueError(
            f"{data}: classes {unknown} are not among the model's classes {run.class_names}; evaluate on data "
            "whose class folders use the names in the run's labels.txt"
        )
    return manifest


def evaluate(
    run_dir: str | Path,
    data=None,
    split: str = "test",
    *,
    top_k: int = 5,
    batch_size: int = 32,
    plots: bool = True,
    tta: str | None = None,
    unknown_dir: str | Path | None = None,
) -> dict:
    """Evaluate the run at `run_dir`; write `report.json` and PNG plots under `eval/`; return the report.

    The run's own test split goes to `eval/`; other splits and other data to a sub-folder (see
    `output_dir`), so the report that model cards quote is always the test split's.

    Args:
        run_dir: a run directory (model.keras, labels.txt, manifest.json).
        data: None for the run's own manifest, or any data `pipelines.ingest` accepts (folder, .zip,
            "tfds:NAME"); its class names must be among the run's classes.
        split: train | val | test | all.
        top_k: k of the top-k accuracy.
        batch_size: images per prediction batch.
        plots: also write confusion_matrix.png, per_class.png and misclassified.png.
        tta: None, or a test-time augmentation mode of `workbench.evaluation.tta` (`flip`, `crops`): the
            report's `tta` then holds the accuracy with and without it and the seconds each took; the
            other metrics stay those of the plain model (what an export serves).
        unknown_dir: a folder of images of no class: the report's `unknown` holds the AUROC of known against
            unknown for both scores and the share of them rejected. Default: the `--unknown-dir` the run's
            calibration.json was fitted with, if any (then the same images set the threshold and score it).

    Returns:
        The report dict: num_examples, accuracy, top_k_accuracy, confusion_matrix (raw and
        normalised), per_class precision/recall/f1/support, macro/weighted averages, most_confused
        pairs, misclassified (highest loss first, with file paths), plus run, split and files written;
        `calibration` (temperature, ECE before and after, reliability bins), `rejection` (threshold, share
        accepted, accuracy on accepted images; None without a threshold) and `unknown` (see `unknown_dir`).
    """
    from workbench.serving.model_files import open_run

    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(EVAL_SPLITS)}")
    run = open_run(run_dir)
    eval_dir = output_dir(run.path, data, split)
    eval_dir.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(run, data, eval_dir)
    records, used = _split_records(manifest, split, data or run.manifest_path)
    from workbench.engine.heads import is_multi_label

    if is_multi_label(run.model):  # the run's kind is its head's: sigmoid per label
        from workbench.evaluation.multilabel_run import evaluate_multi_label

        if tta is not None or unknown_dir is not None:
            raise ValueError(
                f"{run.path} is a multi-label run: test-time augmentation and --unknown-dir are for single-label "
                "runs; evaluate without them"
            )

        return evaluate_multi_label(run, manifest, records, used, eval_dir, data, split, batch_size, plots)
    record = _calibration_record(run.path) if unknown_dir is None else None
    if record and record.get("unknown") and Path(record["unknown"]["dir"]).is_dir():
        unknown_dir = record["unknown"]["dir"]  # the images the threshold was set on, as calibration.json says
    report = _score(run, manifest, records, used, batch_size=batch_size, top_k=top_k, tta=tta, unknown_dir=unknown_dir)
    report.update(provenance(run, manifest, data, split))
    files = {"report": str(eval_dir / "report.json")}
    if plots:
        files.update(_write_plots(report, eval_dir, run.path, own_test=data is None and split == "test"))
    return write_report(report, files, eval_dir)


def provenance(run, manifest, data, split: str) -> dict:
    """What a report was made from, and when: the run, the data, the split."""
    return {
        "run": str(run.path.resolve()),
        "data": str(data) if data is not None else manifest.source,
        "split": split,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_report(report: dict, files: dict, eval_dir: Path) -> dict:
    """`report` with its `files`, written to eval_dir/report.json; returned."""
    from pipelines.files import atomic_write_text

    report["files"] = files
    atomic_write_text(eval_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _split_records(manifest, split: str, source) -> tuple[list, list[str]]:
    """The records of `split` (all three for "all") in manifest order, and the splits that hold any.

    `source` names the data in the error when the split is empty."""
    splits = ("train", "val", "test") if split == "all" else (split,)
    records = [r for s in splits for r in manifest.split_records(s)]
    if not records:
        raise ValueError(
            f"the {split!r} split of {source} has no usable images; "
            f"split sizes are {manifest.split_sizes()}, pick another --split"
        )
    return records, [s for s in splits if manifest.split_records(s)]


def _score(
    run, manifest, records: list, used: list[str], *, batch_size: int, top_k: int, tta: str | None, unknown_dir=None
) -> dict:
    """Predict the records' images with the run's model and build the report (with its `tta` part if asked,
    and its `unknown` part for images of no class under `unknown_dir`)."""
    from pipelines import make_datasets
    from workbench.evaluation.calibrate import (
        folder_logits,
        folder_logits_features,
        read_calibration,
        split_logits,
        split_logits_features,
    )
    from workbench.evaluation.calibration import softmax

    datasets = make_datasets(manifest, image_size=run.resolution, batch_size=batch_size, augment="none")
    calibration = read_calibration(run.path)
    # A feature rejection score (its statistics fitted: `gaussians`) also takes the pooled features.
    with_features = calibration is not None and calibration.gaussians is not None
    started = time.perf_counter()
    # The plain datasets keep manifest order, so row i of the predictions is records[i]. The logits (the same
    # pass: softmax(logits) is the model's output) also give the calibration and rejection sections.
    features = unknown_features = None
    if with_features:
        logits, features = split_logits_features(run, manifest, used, batch_size)
    else:
        logits = split_logits(run, manifest, used, batch_size)
    probabilities = softmax(logits)
    seconds = time.perf_counter() - started
    index = {name: i for i, name in enumerate(run.class_names)}
    y_true = [index[r.label] for r in records]
    report = compute_report(y_true, probabilities, run.class_names, [r.path for r in records], top_k=top_k)
    report.update(calibration_report(logits, y_true, calibration, features))
    if unknown_dir is not None:
        if with_features:
            unknown_logits, unknown_features = folder_logits_features(run, unknown_dir, batch_size)
        else:
            unknown_logits = folder_logits(run, unknown_dir, batch_size)
        report["unknown"] = unknown_report(
            logits,
            unknown_logits,
            unknown_dir,
            report,
            calibration=calibration,
            features=features,
            unknown_features=unknown_features,
        )
    if tta is not None:
        report["tta"] = _tta_report(run.model, [datasets.plain(s) for s in used], tta, y_true, report, seconds)
    return report


def _calibration_record(run_dir: Path) -> dict | None:
    from workbench.evaluation.calibrate import CALIBRATION_FILE

    path = run_dir / CALIBRATION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_plots(report: dict, eval_dir: Path, run_dir: Path, *, own_test: bool) -> dict[str, str]:
    """Write the three report plots into `eval_dir`; for the run's own test split also log the confusion
    matrix to TensorBoard. Returns the files written, by name."""
    from workbench.evaluation.plots import (
        plot_confusion_matrix,
        plot_misclassified,
        plot_per_class,
        plot_reliability,
    )

    files = {
        "confusion_matrix": str(plot_confusion_matrix(report, eval_dir / "confusion_matrix.png")),
        "per_class": str(plot_per_class(report, eval_dir / "per_class.png")),
        "misclassified": str(plot_misclassified(report, eval_dir / "misclassified.png")),
        "reliability": str(plot_reliability(report["calibration"], eval_dir / "reliability.png")),
    }
    if own_test:  # the run's own verdict closes its TensorBoard record
        files["tensorboard"] = str(_log_confusion_matrix(run_dir, Path(files["confusion_matrix"])))
    return files


def _log_confusion_matrix(run_dir: Path, png: Path) -> Path:
    """The confusion-matrix plot as TensorBoard image `eval/confusion_matrix`, after the run's last epoch."""
    from workbench.engine.events import read_events
    from workbench.engine.tensorboard import log_image

    epochs = sum(1 for e in read_events(run_dir) if e["type"] == "epoch")
    return log_image(run_dir, "eval/confusion_matrix", png, step=epochs)


def _tta_report(model, datasets, mode: str, y_true: list[int], plain: dict, plain_seconds: float) -> dict:
    """Accuracy with test-time augmentation `mode` against the plain model's, and what each cost."""
    import numpy as np

    from workbench.evaluation.tta import tta_predict, views

    started = time.perf_counter()
    probabilities = np.concatenate(
        [tta_predict(model.predict_on_batch, images.numpy(), mode) for ds in datasets for images, _ in ds], axis=0
    )
    seconds = time.perf_counter() - started
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(y_true)))
    return {
        "mode": mode,
        "views": len(views(np.zeros((1, 8, 8, 3), np.float32), mode)),
        "accuracy": accuracy,
        "accuracy_without": plain["accuracy"],
        "gain": accuracy - plain["accuracy"],
        "seconds": seconds,
        "seconds_without": plain_seconds,
        "cost": seconds / max(plain_seconds, 1e-9),  # times the plain evaluation's time
    }


def tta_summary(tta: dict) -> str:
    """One line: the accuracy with and without TTA, and its time cost."""
    return (
        f"TTA ({tta['mode']}, {tta['views']} views): accuracy {tta['accuracy']:.4f} against "
        f"{tta['accuracy_without']:.4f} without ({tta['gain']:+.4f}), {tta['seconds']:.1f} s against "
        f"{tta['seconds_without']:.1f} s ({tta['cost']:.1f}x the time)"
    )
