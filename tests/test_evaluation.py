"""Evaluation: the report's numbers (scikit-learn), their consistency on a trained run, plots and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_tiny_run import evaluated, make_image_folder, tiny_run

from workbench.evaluation import compute_report, evaluate, summary_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _onehot_probs(predicted, num_classes, confidence=0.9):
    probs = np.full((len(predicted), num_classes), (1 - confidence) / (num_classes - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_report_counts_and_per_class_metrics_on_known_predictions():
    names = ["cat", "dog", "fox"]
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 2, 2, 0, 1]
    report = compute_report(y_true, _onehot_probs(y_pred, 3), names, [f"f{i}.png" for i in range(9)], top_k=2)

    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 1, 2]]
    assert report["confusion_matrix_normalized"][2] == [0.25, 0.25, 0.5]
    assert report["accuracy"] == pytest.approx(6 / 9)
    assert report["per_class"]["cat"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3), "support": 3}
    assert report["per_class"]["dog"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["fox"]["recall"] == pytest.approx(0.5)
    assert report["macro_avg"]["recall"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    # Most confused: every off-diagonal count, largest first.
    pairs = [(p["true"], p["predicted"], p["count"]) for p in report["most_confused"]]
    assert sorted(pairs) == sorted([("cat", "dog", 1), ("fox", "cat", 1), ("fox", "dog", 1)])
    assert {m["path"] for m in report["misclassified"]} == {"f2.png", "f7.png", "f8.png"}


def test_misclassified_are_ordered_by_loss_and_top_k_counts_runner_up():
    names = ["a", "b", "c"]
    probs = np.array(
        [
            [0.2, 0.7, 0.1],  # true a, wrong, loss -log 0.2
            [0.05, 0.9, 0.05],  # true a, wrong, loss -log 0.05 (worst)
            [0.1, 0.2, 0.7],  # true b, wrong, b is second: counts for top-2
            [0.1, 0.1, 0.8],  # true c, right
        ]
    )
    report = compute_report([0, 0, 1, 2], probs, names, ["x", "worst", "y", "z"], top_k=2)
    losses = [m["loss"] for m in report["misclassified"]]
    assert report["misclassified"][0]["path"] == "worst"
    assert losses == sorted(losses, reverse=True)
    assert report["misclassified"][0]["loss"] == pytest.approx(-np.log(0.05))
    assert report["accuracy"] == pytest.approx(0.25)
    assert report["top_k_accuracy"] == pytest.approx(0.75)  # the last two rows: b second, c first; a's rows miss


def test_binary_and_mismatched_inputs():
    report = compute_report([0, 1, 1], _onehot_probs([0, 1, 0], 2), ["no", "yes"], top_k=5)
    assert report["top_k"] == 2 and report["top_k_accuracy"] == 1.0
    assert report["confusion_matrix"] == [[1, 0], [1, 1]]
    with pytest.raises(ValueError, match="shape"):
        compute_report([0, 1], np.ones((2, 3)) / 3, ["no", "yes"])
    with pytest.raises(ValueError, match="empty"):
        compute_report([], np.zeros((0, 2)), ["no", "yes"])


def test_confusion_heatmap_stays_readable_up_to_100_classes(tmp_path):
    from PIL import Image

    from workbench.evaluation.plots import plot_confusion_matrix, plot_per_class

    rng = np.random.default_rng(0)
    sizes = {}
    for n in (2, 100):
        names = [f"class_{i:03d}" for i in range(n)]
        y_true = rng.integers(0, n, 400)
        probs = rng.dirichlet(np.ones(n), 400)
        report = compute_report(y_true, probs, names, top_k=5)
        path = plot_confusion_matrix(report, tmp_path / f"cm{n}.png")
        bars = plot_per_class(report, tmp_path / f"bars{n}.png")
        with Image.open(path) as image, Image.open(bars) as bar_image:
            sizes[n] = image.size
            assert bar_image.size[1] > 0
    # The figure grows with the classes: at 100 classes each cell still gets about 20 pixels.
    assert sizes[100][1] >= 100 * 18 and sizes[2][1] < sizes[100][1]


def test_evaluate_tiny_run_matrix_sums_to_test_images_and_matches_per_class(tmp_path_factory):
    from pipelines import Manifest

    run = tiny_run(tmp_path_factory)
    report = evaluated(tmp_path_factory)
    test_records = Manifest.load(run / "manifest.json").split_records("test")
    matrix = np.asarray(report["confusion_matrix"])

    assert matrix.sum() == len(test_records) == report["num_examples"]
    for i, name in enumerate(report["classes"]):
        row = report["per_class"][name]
        assert row["support"] == matrix[i].sum() == sum(r.label == name for r in test_records)
        assert row["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum())
        if matrix[:, i].sum():
            assert row["precision"] == pytest.approx(matrix[i, i] / matrix[:, i].sum())
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert len(report["misclassified"]) == min(16, matrix.sum() - np.trace(matrix))
    test_paths = {r.path for r in test_records}
    assert all(m["path"] in test_paths and m["true"] != m["predicted"] for m in report["misclassified"])

    saved = json.loads((run / "eval" / "report.json").read_text())
    assert saved["confusion_matrix"] == report["confusion_matrix"] and saved["split"] == "test"
    for name in ("confusion_matrix", "per_class", "misclassified"):
        assert (run / "eval" / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE
    table = summary_table(report)
    assert all(name in table for name in report["classes"]) and "top-1 accuracy" in table


def test_evaluate_other_data_all_splits_and_unknown_classes(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    evaluated(tmp_path_factory)
    data = make_image_folder(tmp_path / "new", per_class=6, seed=5)
    own = json.loads((run / "eval" / "report.json").read_text())
    report = evaluate(run, data=str(data), split="all", plots=False)
    assert report["num_examples"] == 18 and np.asarray(report["confusion_matrix"]).sum() == 18
    saved = json.loads((run / "eval" / "new-all" / "report.json").read_text())
    assert saved["split"] == "all" and saved["data"] == str(data)
    # The run's own test report (the one model cards quote) is left alone.
    assert json.loads((run / "eval" / "report.json").read_text()) == own
    (data / "purple").mkdir()
    for i, source in enumerate(sorted((data / "red").iterdir())[:3]):
        source.rename(data / "purple" / f"p{i}.jpg")
    with pytest.raises(ValueError, match="purple"):
        evaluate(run, data=str(data), plots=False)
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(run, split="holdout")


def test_cli_prints_summary_and_fails_cleanly(tmp_path_factory, tmp_path, capsys):
    from workbench.cli import main

    run = tiny_run(tmp_path_factory)
    assert main(["evaluate", str(run), "--split", "val", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "top-2 accuracy" in out and "precision" in out and str(run / "eval" / "val") in out
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "model.keras" in err and "Traceback" not in err


def test_top_k_below_one_is_refused_with_exit_code_2(tmp_path_factory, capsys):
    # D (issue 11): `evaluate --top-k 0` silently reported top_k 1.
    from workbench.cli import main

    for k in ("0", "-3"):
        assert main(["evaluate", str(tiny_run(tmp_path_factory)), "--top-k", k]) == 2
        err = capsys.readouterr().err
        assert f"--top-k must be at least 1, got {k}" in err and "Traceback" not in err
