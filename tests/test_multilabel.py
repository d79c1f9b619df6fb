"""Multi-label classification: thresholds, the report, the loss, the datasets, and one run end to end.

Specification:
* each label's threshold is the one that maximises its F1 on validation (0.5 when validation cannot tell);
* the report holds mAP, micro and macro F1, per-label precision/recall/F1/support/AP, a 2x2 matrix per label,
  the label co-occurrence and the most confident mistakes;
* the asymmetric loss down-weights easy negatives and is binary cross-entropy without focusing or clipping;
* datasets of a multi-label manifest carry multi-hot float32 rows;
* `workbench train labels.csv` trains a sigmoid head through the same engine, tunes thresholds (no calibration),
  evaluates, exports a SavedModel whose graph holds the thresholds, and `predict` prints every label over its
  threshold (slow).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_multilabel import LABELS, make_multilabel_data
from sklearn.metrics import average_precision_score, f1_score

from workbench.evaluation.multilabel import (
    DEFAULT_THRESHOLD,
    best_f1_threshold,
    multilabel_report,
    over_threshold,
    tune_thresholds,
)


# ------------------------------------------------------------------ thresholds
def test_the_threshold_maximises_f1_on_validation():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    scores = np.clip(0.35 * y + rng.normal(0.3, 0.15, 200), 0, 1)
    threshold, f1 = best_f1_threshold(y, scores)
    assert f1 == pytest.approx(f1_score(y, scores >= threshold))
    every_cut = max(f1_score(y, scores >= t) for t in np.unique(scores))
    assert f1 == pytest.approx(every_cut)  # no threshold does better


def test_a_threshold_separates_a_separable_label_between_its_classes():
    threshold, f1 = best_f1_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9]))
    assert 0.2 < threshold < 0.7 and f1 == 1.0


def test_a_label_validation_cannot_tune_keeps_the_default():
    assert best_f1_threshold(np.zeros(5), np.linspace(0, 1, 5)) == (DEFAULT_THRESHOLD, None)
    thresholds, f1 = tune_thresholds(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.2], [0.1, 0.3]]))
    assert thresholds[1] == DEFAULT_THRESHOLD and f1[1] is None and f1[0] == 1.0


# ------------------------------------------------------------------ the report
def test_the_report_holds_map_f1_per_label_figures_matrices_and_cooccurrence():
    rng = np.random.default_rng(1)
    y = (rng.random((60, 3)) < 0.4).astype(np.float32)
    p = np.clip(0.5 * y + rng.uniform(0, 0.6, (60, 3)), 0, 1)
    thresholds = np.array([0.5, 0.55, 0.6], np.float32)
    report = multilabel_report(y, p, thresholds, list(LABELS), [f"img{i}.png" for i in range(60)])
    predicted = over_threshold(p, thresholds)
    aps = [average_precision_score(y[:, k], p[:, k]) for k in range(3)]
    assert report["mAP"] == pytest.approx(np.mean(aps))
    assert report["micro_f1"] == pytest.approx(f1_score(y, predicted, average="micro"))
    assert report["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    red = report["label_matrices"]["red"]
    assert red["tp"] + red["fn"] == report["per_label"]["red"]["support"] == int(y[:, 2].sum())
    assert sum(red.values()) == 60
    assert report["per_label"]["green"]["threshold"] == pytest.approx(0.55)
    assert report["cooccurrence"][0][2] == int((y[:, 0] * y[:, 2]).sum())
    assert report["cooccurrence"][1][1] == int(y[:, 1].sum())


def test_most_confident_mistakes_come_first_and_name_image_label_and_kind():
    y = np.array([[1, 0], [0, 1], [0, 0]], np.float32)
    p = np.array([[0.05, 0.1], [0.2, 0.8], [0.3, 0.97]], np.float32)
    report = multilabel_report(y, p, np.array([0.5, 0.5]), ["cat", "dog"], ["a.png", "b.png", "c.png"])
    first, second = report["mistakes"][:2]
    assert (first["path"], first["label"], first["kind"]) == ("c.png", "dog", "false positive")
    assert (second["path"], second["label"], second["kind"]) == ("a.png", "cat", "false negative")
    assert first["confidence"] == pytest.approx(0.97) and second["confidence"] == pytest.approx(0.95)
    assert report["empty_label_sets"] == 1


def test_labels_without_positives_are_left_out_of_map_and_macro_f1_and_named():
    y = np.array([[1, 0], [0, 0]], np.float32)
    report = multilabel_report(y, np.array([[0.9, 0.1], [0.2, 0.1]]), np.array([0.5, 0.5]), ["a", "b"], ["x", "y"])
    assert report["labels_without_positives"] == ["b"] and report["mAP"] == 1.0 and report["macro_f1"] == 1.0


# ------------------------------------------------------------------ the loss
def test_asymmetric_loss_down_weights_easy_negatives_and_is_bce_without_focusing():
    import keras

    from workbench.engine.losses import AsymmetricLoss

    negative = np.array([[0.0]], np.float32)
    asl, bce = AsymmetricLoss(), keras.losses.BinaryCrossentropy()
    easy, hard = np.array([[0.1]], np.float32), np.array([[0.8]], np.float32)
    assert float(asl(negative, easy)) < 1e-3 * float(bce(negative, easy))  # an easy negative hardly counts
    assert float(asl(negative, hard)) > 0.2 * float(bce(negative, hard))  # a confident wrong one still does
    assert float(asl(negative, np.array([[0.04]], np.float32))) == 0.0  # below the clip: nothing
    y, hard = np.array([[1.0, 0.0, 0.0]], np.float32), np.array([[0.9, 0.8, 0.04]], np.float32)
    plain = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    summed = bce(y, hard) * 3  # keras averages over labels, ASL sums them
    assert float(plain(y, hard)) == pytest.approx(float(summed), rel=1e-4)


# ------------------------------------------------------------------ datasets
def test_datasets_of_a_multi_label_manifest_carry_multi_hot_rows(tmp_path):
    from pipelines import ingest, make_datasets

    manifest = ingest(str(make_multilabel_data(tmp_path / "d", n=24)), workdir=tmp_path / "run")
    datasets = make_datasets(manifest, image_size=16, batch_size=64, augment="none")
    labels = np.concatenate([y.numpy() for _, y in datasets.plain("train")])
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, manifest.split_targets("train"))
    assert (labels.sum(axis=1) != 1).any()  # not one-hot: sets of 0 to 3 labels


# ------------------------------------------------------------------ end to end (slow)
@pytest.mark.slow
def test_train_evaluate_export_predict_a_multi_label_run(tmp_path, capsys, monkeypatch):
    from workbench.cli import main

    monkeypatch.chdir(tmp_path)  # exports go to ./saved_models/

    label_file = make_multilabel_data(tmp_path / "data", n=48, size=32)
    args = [
        "train", str(label_file), "--variant", "phi=-8", "--weights", "none", "--image-size", "32",
        "--batch-size", "8", "--epochs", "6", "--fine-tune-epochs", "1", "--recipe", "fixed",
        "--learning-rate", "0.01", "--val-fraction", "0.2", "--test-fraction", "0.2", "--loss", "asl",
        "--precision", "float32", "--strategy", "default", "--out", str(tmp_path / "runs"), "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "per-label thresholds" in printed and "calibration: skipped (multi-label run" in printed
    assert "mAP" in printed and "exported (savedmodel)" in printed
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "calibration.json").exists()
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert thresholds["labels"] == list(LABELS) and len(thresholds["thresholds"]) == 3

    from workbench.engine.heads import is_multi_label
    from workbench.serving.model_files import open_run

    assert is_multi_label(open_run(run).model)
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["kind"] == "multi-label" and set(report["files"]) >= {"per_label", "cooccurrence", "mistakes"}
    assert report["mAP"] > 0.6  # stripes of colour: far above the label frequencies (about 0.5)

    import tensorflow as tf

    (version,) = [p for p in (tmp_path / "saved_models").glob("*/1")]
    card = json.loads((version / "model_card.json").read_text())
    assert card["multi_label"]["in_graph"] and list(card["multi_label"]["thresholds"]) == list(LABELS)
    served = tf.saved_model.load(str(version)).signatures["serving_default"]
    image = (tmp_path / "data" / "images" / "img_000.png").read_bytes()
    out = served(image_bytes=tf.constant([image]))
    expected = out["probabilities"].numpy()[0] >= np.array(thresholds["thresholds"])
    np.testing.assert_array_equal(out["over_threshold"].numpy()[0], expected.astype(np.int32))
    names = [name.decode() for name in out["labels"].numpy()[0]]
    assert names == [label if over else "" for label, over in zip(LABELS, expected, strict=True)]

    from workbench.evaluation import evaluate
    from workbench.evaluation.calibrate import calibrate_run
    from workbench.serving.export import export

    for refused in (
        lambda: calibrate_run(run),  # temperature and rejection are single-label
        lambda: evaluate(run, tta="flip"),
        lambda: export(run, "tflite-int8"),  # its gate measures top-1 accuracy
    ):
        with pytest.raises(ValueError, match="is a multi-label run"):
            refused()
    assert main(["export", str(run), "--format", "tflite-fp16"]) == 0
    capsys.readouterr()
    (tflite,) = (tmp_path / "saved_models").glob("*/tflite-fp16/model.tflite")
    for model in (version, tflite, run):
        assert main(["predict", str(model), str(tmp_path / "data" / "images" / "img_000.png"), "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        assert {p["class"] for p in result["labels"]} == {n for n in names if n} or model == tflite


@pytest.mark.slow
def test_the_app_loads_a_labels_csv_and_shows_the_multi_label_report(tmp_path, monkeypatch):
    from test_app import goto, new_app
    from test_engine_helpers import tiny_config

    from workbench.engine import fine_tune

    monkeypatch.chdir(tmp_path)  # the app reads ./runs
    label_file = make_multilabel_data(tmp_path / "data", n=36, size=32)
    config = tiny_config(label_file, tmp_path / "runs", variant="phi=-8", epochs=2, fine_tune_epochs=0)
    config["recipe"]["test_fraction"] = 0.2
    fine_tune(config, tensorboard=False)

    from apps import background

    try:
        at = new_app().run()
        at.radio(key="data_source").set_value("Local folder or zip").run()
        at.text_input(key="data_folder").input(str(label_file))
        next(b for b in at.button if b.label == "Load folder").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any("36 usable images in 3 labels (multi-label" in s.value for s in at.success)

        goto(at, "Evaluate")
        metrics = {m.label: m.value for m in at.metric}
        report = json.loads(next((tmp_path / "runs").glob("*/eval/report.json")).read_text())
        assert report["kind"] == "multi-label" and metrics["mAP"] == f"{report['mAP']:.3f}"
        assert {"Macro F1", "Micro F1", "Exact label set"} <= set(metrics)
    finally:
        background.stop_all()  # the app's background measurements
