"""Feature-space rejection (Mahalanobis on pooled features): the math on synthetic Gaussian features, the
threshold rule, the graph's formula, then "unknown" / -1 from a tiny run exported with the score in its graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.evaluation.ood import FEATURE_SCORES, fit_gaussians, load, normalised_for, save, unit_norm
from workbench.evaluation.rejection import SCORES, auroc, threshold_from_scores

DIMENSIONS = 32


def clusters(seed: int = 0, per_class: int = 200, num_known: int = 4, num_unknown: int = 3, spread: float = 4.0):
    """Known classes: unit Gaussians around random centres; unknown images: the same around other centres.
    Returns (train features, train labels, known test features, unknown test features)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (num_known + num_unknown, DIMENSIONS))

    def sample(classes: np.ndarray) -> np.ndarray:
        return centres[classes] + rng.normal(0, 1, (len(classes), DIMENSIONS))

    labels = np.repeat(np.arange(num_known), per_class)
    unknown = np.repeat(np.arange(num_known, num_known + num_unknown), per_class // 2)
    return sample(labels), labels, sample(np.repeat(np.arange(num_known), per_class // 2)), sample(unknown)


@pytest.mark.parametrize("kind", FEATURE_SCORES)
def test_clusters_far_from_the_known_ones_score_lower(kind):
    train, labels, known, unknown = clusters()
    gaussians = fit_gaussians(train, labels, 4, normalised=normalised_for(kind))
    known_scores, unknown_scores = gaussians.score(known, kind), gaussians.score(unknown, kind)
    assert np.median(unknown_scores) < np.percentile(known_scores, 1)
    assert auroc(known_scores, unknown_scores) > 0.99


def test_mahalanobis_is_minus_the_distance_to_the_nearest_class_mean():
    train, labels, known, unknown = clusters(seed=1)
    gaussians = fit_gaussians(train, labels, 4)
    x = np.concatenate([known[:5], unknown[:5]])
    P = gaussians.precision

    def distance(a, mean, precision):
        return (a - mean) @ precision @ (a - mean)

    nearest = np.array([min(distance(a, m, P) for m in gaussians.means) for a in x])
    background = np.array([distance(a, gaussians.background_mean, gaussians.background_precision) for a in x])
    np.testing.assert_allclose(gaussians.score(x, "mahalanobis"), -nearest, rtol=1e-8)
    np.testing.assert_allclose(gaussians.score(x, "relative_mahalanobis"), background - nearest, rtol=1e-6)
    # mahalanobis_l2: the same on unit-norm features, fitted on unit-norm features.
    l2 = fit_gaussians(train, labels, 4, normalised=True)
    unit = unit_norm(x)
    nearest_l2 = np.array([min(distance(a, m, l2.precision) for m in l2.means) for a in unit])
    np.testing.assert_allclose(l2.score(x, "mahalanobis_l2"), -nearest_l2, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(l2.means, axis=1), 1, atol=0.05)  # means of unit vectors
    with pytest.raises(ValueError, match="normalised=True"):
        gaussians.score(x, "mahalanobis_l2")
    # The tied precision inverts the shrunk covariance of the features around their class means.
    np.testing.assert_allclose(gaussians.means, [train[labels == k].mean(axis=0) for k in range(4)])


def test_every_score_is_an_option():
    from workbench.engine.config import REJECT_SCORES
    from workbench.evaluation.rejection import SCORES

    assert REJECT_SCORES == SCORES


def test_the_threshold_rule_works_on_feature_scores():
    train, labels, known, unknown = clusters(seed=3, spread=0.7)  # overlapping: no threshold separates them all
    gaussians = fit_gaussians(train, labels, 4)
    val, fit = gaussians.score(known, "mahalanobis"), gaussians.score(unknown, "mahalanobis")
    correct = np.ones(len(val), bool)
    chosen = threshold_from_scores(
        val, correct, kind="mahalanobis", reject="auto", target="false-accept:0.05", unknown_scores=fit
    )
    assert chosen.score == "mahalanobis" and chosen.value is not None
    assert chosen.false_accept <= 0.05 and 0.3 < chosen.accepted < 1
    covered = threshold_from_scores(val, correct, kind="mahalanobis", reject="auto", target="coverage:0.8")
    assert covered.accepted == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="a threshold on max_softmax, not on mahalanobis"):
        threshold_from_scores(val, correct, kind="mahalanobis", reject=0.5, target="accuracy:0.95")


def test_statistics_round_trip_and_a_class_without_features_is_refused(tmp_path):
    train, labels, _, _ = clusters(seed=4, per_class=40)
    gaussians = fit_gaussians(train, labels, 4)
    save(tmp_path / "ood.npz", gaussians)
    again = load(tmp_path / "ood.npz")
    np.testing.assert_array_equal(again.precision, gaussians.precision)
    np.testing.assert_array_equal(again.score(train, "mahalanobis"), gaussians.score(train, "mahalanobis"))
    with pytest.raises(ValueError, match="classes 4 have none"):
        fit_gaussians(train, labels, 5)
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"bad\.npz: not the feature statistics"):
        load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="do not match"):
        gaussians.score(train[:, :8], "mahalanobis")


def test_phase_one_cached_train_features_are_reused_only_while_they_are_the_models(tmp_path):
    from workbench.evaluation.calibrate import cached_train_features

    rng = np.random.default_rng(6)
    train, val = rng.normal(size=(20, 8)), rng.normal(size=(6, 8))
    (tmp_path / "checkpoints").mkdir()
    assert cached_train_features(tmp_path, val, 20) is None  # no cache
    np.savez(tmp_path / "checkpoints" / "features.npz", train_x=train.astype(np.float32), val_x=val.astype(np.float32))
    np.testing.assert_allclose(cached_train_features(tmp_path, val, 20), train, rtol=1e-6)  # head-only run
    assert cached_train_features(tmp_path, val + rng.normal(0, 0.3, val.shape), 20) is None  # backbone fine-tuned
    assert cached_train_features(tmp_path, val, 21) is None  # another train split


@pytest.mark.parametrize("kind", FEATURE_SCORES)
def test_the_graph_computes_the_same_score(kind):
    from workbench.evaluation.calibrate import Calibration
    from workbench.serving.calibrated import feature_score

    train, labels, known, unknown = clusters(seed=5)
    calibration = Calibration(1.0, kind, 0.0, fit_gaussians(train, labels, 4, normalised=normalised_for(kind)))
    x = np.concatenate([known, unknown]).astype(np.float32)
    expected = calibration.gaussians.score(x, kind)
    np.testing.assert_allclose(
        feature_score(x, calibration).numpy(), expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max()
    )


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def mahalanobis_run(tmp_path_factory):
    """The shared tiny run, copied, calibrated with the Mahalanobis score for a threshold that accepts half of
    its validation images, with a folder of grey and noise images that show no class colour."""
    import shutil

    from PIL import Image

    from tests.helpers_tiny_run import split_images, tiny_run
    from workbench.engine.config import RejectConfig
    from workbench.evaluation.calibrate import calibrate_run

    base = tmp_path_factory.mktemp("mahalanobis")
    run_dir = base / "run"
    shutil.copytree(tiny_run(tmp_path_factory), run_dir)
    unknown = base / "unknown"
    unknown.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.new("RGB", (40, 40), (60 + 20 * i,) * 3).save(unknown / f"grey{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(unknown / f"noise{i}.png")
    settings = RejectConfig(
        reject="auto", reject_target="coverage:0.5", reject_score="mahalanobis", unknown_dir=str(unknown)
    )
    record = calibrate_run(run_dir, settings)
    return run_dir, record, [*split_images(tmp_path_factory), *map(str, sorted(unknown.iterdir()))]


def test_calibration_fits_and_stores_the_feature_statistics(mahalanobis_run):
    from workbench.evaluation.calibrate import read_calibration

    run_dir, record, _ = mahalanobis_run
    assert record["rejection"]["score"] == "mahalanobis" and record["rejection"]["value"] is not None
    assert set(record["unknown"]["auroc"]) == set(SCORES)  # every score, for images of no class
    calibration = read_calibration(run_dir)
    assert calibration.needs_features and (run_dir / "ood.npz").is_file()
    assert calibration.gaussians.means.shape[0] == 3


def test_savedmodel_rejects_with_the_score_in_its_graph_and_agrees_with_predict(mahalanobis_run, tmp_path):
    import tensorflow as tf

    from workbench.engine.heads import logits_and_features_model
    from workbench.evaluation.calibrate import read_calibration
    from workbench.serving.export import export, read_card
    from workbench.serving.imaging import load_files
    from workbench.serving.model_files import open_run
    from workbench.serving.predict import predict

    run_dir, record, images = mahalanobis_run
    threshold = record["rejection"]["value"]
    saved = export(run_dir, "savedmodel", out=tmp_path / "export")
    card = read_card(saved)["calibration"]
    assert card["score"] == "mahalanobis" and card["threshold"] == threshold and card["in_graph"]
    assert not (saved / "ood.npz").exists()  # the statistics are graph constants

    outputs = tf.saved_model.load(str(saved)).signatures["serving_default"](
        image_bytes=tf.constant([Path(p).read_bytes() for p in images])
    )
    index = outputs["class_index"].numpy()
    names = [n.decode() for n in outputs["class_name"].numpy()]
    assert (index == -1).any() and (index >= 0).any()
    assert all((name == "unknown") == (i == -1) for name, i in zip(names, index, strict=True))
    # The graph's decision is the NumPy score's on the run's own pooled features (away from float32 rounding).
    run = open_run(run_dir)
    _, features = logits_and_features_model(run.model).predict(load_files(images, run.resolution), verbose=0)
    scores = read_calibration(run_dir).gaussians.score(features, "mahalanobis")
    clear = np.abs(scores - threshold) > 1e-3 * np.abs(threshold)
    assert ((scores >= threshold) == (index >= 0))[clear].all()

    # `workbench predict` gives the same answers from the SavedModel, the run directory and the .keras export.
    keras_file = export(run_dir, "keras", out=tmp_path / "export")
    assert (keras_file.parent / "ood.npz").is_file()
    for model in (saved, run_dir, keras_file):
        results = predict(model, images, top_k=1)
        assert [r["class_index"] for r in results] == index.tolist(), model
        assert [r["class_name"] for r in results] == names, model


@pytest.mark.parametrize(
    "fmt",
    [
        pytest.param("tflite", marks=pytest.mark.slow),  # ~10-20 s: a conversion; the graph is the SavedModel's
        "onnx",  # its export checks itself against Keras' calibrated answers, rejections included
    ],
)
def test_float_tflite_and_onnx_carry_the_feature_score(mahalanobis_run, tmp_path, fmt):
    from workbench.serving.export import export
    from workbench.serving.predict import predict

    run_dir, _, images = mahalanobis_run
    tflite = export(run_dir, fmt, out=tmp_path / "export")
    answers = [r["class_index"] for r in predict(tflite, images, top_k=1)]
    assert -1 in answers
    assert answers == [r["class_index"] for r in predict(run_dir, images, top_k=1)]


def test_float16_tflite_refuses_a_feature_score(mahalanobis_run, tmp_path):
    from workbench.serving.export import export

    run_dir, _, _ = mahalanobis_run
    with pytest.raises(ValueError, match="float16 TFLite model cannot hold the mahalanobis"):
        export(run_dir, "tflite-fp16", out=tmp_path / "export")
    assert not (tmp_path / "export" / "tflite-fp16").exists()


@pytest.mark.slow  # ~15-30 s: three forward passes and the plots; the pieces are tested above
def test_evaluate_fits_another_feature_score_and_reports_it(mahalanobis_run, capsys):
    """(Last: it refits the shared run's calibration.)"""
    import json

    from workbench.cli import main

    run_dir, _, images = mahalanobis_run
    unknown_dir = str(Path(images[-1]).parent)
    flags = ["--reject", "auto", "--reject-score", "mahalanobis_l2", "--reject-target", "coverage:0.75"]
    code = main(["evaluate", str(run_dir), "--split", "val", *flags, "--unknown-dir", unknown_dir])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rejection (coverage:0.75): mahalanobis_l2 >=" in out
    report = json.loads((run_dir / "eval" / "val" / "report.json").read_text())
    assert report["rejection"]["score"] == "mahalanobis_l2"
    assert report["rejection"]["accepted"] == pytest.approx(0.75, abs=0.1)
    assert {"energy", "mahalanobis_l2"} <= set(report["unknown"]["auroc"]) and report["unknown"]["rejected"] >= 0
