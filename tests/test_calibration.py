"""Temperature scaling and ECE: the math on synthetic logits, then the step that fits them on a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    logits_from_probabilities,
    reliability,
    softmax,
)
from workbench.evaluation.rejection import SCORES


def calibrated_logits(n: int = 4000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is calibrated by construction: labels are drawn from softmax(logits) itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, classes))
    probabilities = softmax(logits)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return logits, labels


def test_temperature_recovers_a_known_over_confidence_and_ece_goes_down():
    logits, labels = calibrated_logits()
    over_confident = logits * 2.5  # the model's logits are 2.5x too large: T should come out near 2.5
    temperature = fit_temperature(over_confident, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(softmax(over_confident), labels)
    after = expected_calibration_error(softmax(over_confident, temperature), labels)
    assert before > 0.1
    assert after < 0.03
    assert after < before / 3


def test_temperature_sharpens_an_under_confident_model():
    logits, labels = calibrated_logits(seed=1)
    assert fit_temperature(logits * 0.5, labels) == pytest.approx(0.5, rel=0.1)


def test_temperature_scaling_never_changes_the_predicted_class():
    logits, labels = calibrated_logits(n=500)
    temperature = fit_temperature(logits * 3, labels)
    assert (softmax(logits * 3, temperature).argmax(1) == logits.argmax(1)).all()


def test_log_of_probabilities_scales_exactly_like_the_logits():
    logits, _ = calibrated_logits(n=200)
    recovered = logits_from_probabilities(softmax(logits))
    np.testing.assert_allclose(softmax(recovered, 1.7), softmax(logits, 1.7), atol=1e-9)


def test_ece_of_a_hand_made_case():
    # Two images at confidence 0.9 (one right) and two at 0.6 (both right): |0.9-0.5|/2 + |0.6-1|/2 = 0.4.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)
    bins = reliability(probabilities, labels)["bins"]
    assert len(bins) == 15
    assert sum(b["count"] for b in bins) == 4
    assert [b["accuracy"] for b in bins if b["count"]] == [1.0, 0.5]


def test_a_confidence_of_one_falls_in_the_last_bin():
    bins = reliability(np.array([[1.0, 0.0]]), np.array([0]))["bins"]
    assert bins[-1]["count"] == 1


def test_fit_temperature_names_an_empty_split():
    with pytest.raises(ValueError, match="validation split must hold images"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, int))


def test_calibration_json_of_a_tiny_run(tiny_calibrated):
    """The step after training writes calibration.json: a temperature, ECE before and after, the threshold."""
    run_dir, record = tiny_calibrated
    saved = json.loads((run_dir / "calibration.json").read_text())
    assert saved == record
    assert saved["temperature"] > 0
    assert saved["split"] == "val"
    assert saved["ece_after"] <= saved["ece_before"] + 1e-9
    assert saved["rejection"]["score"] in SCORES


def test_evaluate_reports_ece_before_and_after_with_a_reliability_diagram(tiny_calibrated, tmp_path):
    from workbench.evaluation import evaluate

    run_dir, record = tiny_calibrated
    report = evaluate(run_dir, split="val")
    calibration = report["calibration"]
    assert calibration["temperature"] == pytest.approx(record["temperature"])
    assert calibration["ece_after"] <= calibration["ece_before"] + 1e-9
    png = report["files"]["reliability"]
    assert png.endswith("reliability.png")
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_calibrated(tmp_path_factory):
    """The shared tiny run, copied, calibrated with rejection on a fixed probability."""
    import shutil

    from tests.helpers_tiny_run import tiny_run
    from workbench.engine.config import RejectConfig
    from workbench.evaluation.calibrate import calibrate_run

    run_dir = tmp_path_factory.mktemp("calibrated") / "run"
    shutil.copytree(tiny_run(tmp_path_factory), run_dir)
    record = calibrate_run(run_dir, RejectConfig(reject="0.6"))
    return run_dir, record
