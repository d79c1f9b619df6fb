"""Rejection: scores and thresholds on synthetic logits, then "unknown" / -1 from an exported tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.evaluation.rejection import (
    UNKNOWN_INDEX,
    auroc,
    choose_threshold,
    decide,
    parse_reject,
    parse_target,
    score,
)


def known_and_unknown(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known images: a margin for their class that varies, so confident ones are right more often.
    Unknown images: small logits with no class standing out."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 2000)
    margin = rng.uniform(-1, 5, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), labels] += margin
    unknown = rng.normal(0, 1, (1000, 4))
    return logits, labels, unknown


def test_auto_threshold_meets_the_target_accuracy_on_accepted_images():
    logits, labels, _ = known_and_unknown()
    overall = (logits.argmax(1) == labels).mean()
    assert overall < 0.9
    chosen = choose_threshold(logits, labels, 1.0, kind="max_softmax", reject="auto", target="accuracy:0.95")
    assert chosen.warning is None
    assert chosen.accuracy_accepted >= 0.95
    accepted = score(logits, 1.0, "max_softmax") >= chosen.value
    assert (logits.argmax(1) == labels)[accepted].mean() >= 0.95
    assert 0.2 < chosen.accepted < 1  # the most images that still meet it, not a token few
    # The next lower distinct score would break the target: the threshold is the lowest that meets it.
    scores = score(logits, 1.0, "max_softmax")
    lower = scores[scores < chosen.value].max()
    assert (logits.argmax(1) == labels)[scores >= lower].mean() < 0.95


def test_coverage_target_accepts_that_share():
    logits, labels, _ = known_and_unknown()
    chosen = choose_threshold(logits, labels, 1.0, kind="energy", reject="auto", target="coverage:0.8")
    assert chosen.accepted == pytest.approx(0.8, abs=0.001)
    assert chosen.score == "energy"


def test_false_accept_target_uses_unknown_images():
    logits, labels, unknown = known_and_unknown()
    chosen = choose_threshold(
        logits, labels, 1.0, kind="energy", reject="auto", target="false-accept:0.05", unknown_logits=unknown
    )
    assert chosen.false_accept <= 0.05
    assert (score(unknown, 1.0, "energy") >= chosen.value).mean() <= 0.05
    with pytest.raises(ValueError, match="--unknown-dir"):
        choose_threshold(logits, labels, 1.0, kind="energy", reject="auto", target="false-accept:0.05")


def test_a_threshold_that_rejects_everything_is_reported_not_applied():
    logits, labels, _ = known_and_unknown()
    chosen = choose_threshold(logits, labels, 1.0, kind="max_softmax", reject=0.9999999, target="accuracy:0.95")
    assert chosen.value is None
    assert "reject every validation image" in chosen.warning
    # An accuracy no subset reaches: the most confident image is wrong.
    wrong_first = np.array([[9.0, 0.0], [1.0, 0.0]])
    chosen = choose_threshold(wrong_first, [1, 0], 1.0, kind="max_softmax", reject="auto", target="accuracy:0.99")
    assert chosen.value is None and "reject every" in chosen.warning


def test_a_threshold_that_rejects_nothing_is_reported():
    _, labels, _ = known_and_unknown()
    easy = np.eye(4)[labels] * 10  # every image right: accuracy:0.95 holds with all accepted
    auto = choose_threshold(easy, labels, 1.0, kind="max_softmax", reject="auto", target="accuracy:0.95")
    assert auto.value is None
    assert "rejects no validation image" in auto.warning
    given = choose_threshold(easy, labels, 1.0, kind="max_softmax", reject=0.3, target="accuracy:0.95")
    assert given.value == 0.3  # the user's own number is kept, with the warning
    assert "rejects no validation image" in given.warning


def test_a_probability_is_a_threshold_on_the_calibrated_top_probability():
    logits, labels, _ = known_and_unknown()
    chosen = choose_threshold(logits, labels, 2.0, kind="energy", reject=0.5, target="accuracy:0.95")
    assert chosen.score == "max_softmax"
    assert chosen.accepted == pytest.approx((score(logits, 2.0, "max_softmax") >= 0.5).mean())


def test_off_applies_nothing():
    logits, labels, _ = known_and_unknown()
    chosen = choose_threshold(logits, labels, 1.0, kind="max_softmax", reject="off", target="accuracy:0.95")
    assert chosen.value is None and chosen.warning is None and chosen.accepted == 1


def test_scores_and_auroc():
    logits, _, unknown = known_and_unknown()
    for kind in ("max_softmax", "energy"):
        assert auroc(score(logits, 1.0, kind), score(unknown, 1.0, kind)) > 0.7
    # max_softmax is the calibrated top probability; energy is T * logsumexp(z / T).
    row = np.array([[2.0, 0.0, -1.0]])
    np.testing.assert_allclose(score(row, 2.0, "max_softmax"), [np.exp(1) / (np.exp(1) + 1 + np.exp(-0.5))])
    np.testing.assert_allclose(score(row, 2.0, "energy"), [2 * np.log(np.exp(1) + 1 + np.exp(-0.5))])


def test_decide_marks_rejected_rows_unknown():
    row = np.array([[2.0, 0.0], [0.1, 0.0]])
    assert decide(row, 1.0, "max_softmax", 0.6).tolist() == [0, UNKNOWN_INDEX]
    assert decide(row, 1.0, "max_softmax", None).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [("accuracy", "KIND:VALUE"), ("precision:0.9", "KIND:VALUE"), ("coverage:1.5", "KIND:VALUE")],
)
def test_bad_targets_name_the_spelling(text, message):
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def test_reject_values():
    assert parse_reject("auto") == "auto"
    assert parse_reject("OFF") == "off"
    assert parse_reject("0.7") == 0.7
    for bad in ("1.5", "0", "maybe"):
        with pytest.raises(ValueError, match="--reject"):
            parse_reject(bad)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def rejecting_run(tmp_path_factory):
    """The shared tiny run, copied, with a threshold that accepts half of its validation images (so some
    images are surely below it), and a grey image that shows no class colour."""
    import shutil

    from PIL import Image

    from tests.helpers_tiny_run import split_images, tiny_run
    from workbench.engine.config import RejectConfig
    from workbench.evaluation.calibrate import calibrate_run

    base = tmp_path_factory.mktemp("rejecting")
    run_dir = base / "run"
    shutil.copytree(tiny_run(tmp_path_factory), run_dir)
    # The energy score, in the graph from the logits alone (the feature scores: tests/test_ood.py).
    record = calibrate_run(run_dir, RejectConfig(reject="auto", reject_target="coverage:0.5", reject_score="energy"))
    grey = base / "grey.png"
    Image.new("RGB", (40, 40), (90, 90, 90)).save(grey)
    return run_dir, record, [*split_images(tmp_path_factory), str(grey)]


def test_savedmodel_answers_unknown_below_the_threshold_and_agrees_with_predict(rejecting_run, tmp_path):
    import tensorflow as tf

    from workbench.engine.heads import logits_model
    from workbench.serving.export import export, read_card
    from workbench.serving.imaging import load_files
    from workbench.serving.model_files import open_run
    from workbench.serving.predict import predict

    run_dir, record, images = rejecting_run
    threshold = record["rejection"]["value"]
    assert threshold is not None and record["rejection"]["accepted"] == pytest.approx(0.5, abs=0.1)
    saved = export(run_dir, "savedmodel", out=tmp_path / "export")
    card = read_card(saved)["calibration"]
    assert card["threshold"] == threshold and card["temperature"] == record["temperature"] and card["in_graph"]
    assert "below it the class is `unknown`, index -1" in (saved / "model_card.md").read_text()

    outputs = tf.saved_model.load(str(saved)).signatures["serving_default"](
        image_bytes=tf.constant([Path(p).read_bytes() for p in images])
    )
    index = outputs["class_index"].numpy()
    names = [n.decode() for n in outputs["class_name"].numpy()]
    top = outputs["probabilities"].numpy().max(axis=1)
    assert (index == -1).any() and (index >= 0).any()
    assert all((name == "unknown") == (i == -1) for name, i in zip(names, index, strict=True))
    # The energy score is T * logsumexp(logits / T), on the model's own logits.
    run = open_run(run_dir)
    logits = logits_model(run.model).predict(load_files(images, run.resolution), verbose=0)
    energy = score(logits, record["temperature"], "energy")
    assert record["rejection"]["score"] == card["score"] == "energy"
    assert ((energy >= threshold) == (index >= 0)).all()

    # `workbench predict` gives the same answers from the SavedModel and from the run directory (Keras).
    from_saved = predict(saved, images, top_k=1)
    from_run = predict(run_dir, images, top_k=1)
    assert [r["class_index"] for r in from_saved] == index.tolist()
    assert [r["class_name"] for r in from_saved] == names
    assert [r["class_index"] for r in from_run] == index.tolist()
    np.testing.assert_allclose([r["predictions"][0]["probability"] for r in from_run], top, atol=1e-4)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_float_tflite_and_onnx_carry_the_threshold_too(rejecting_run, tmp_path, fmt):
    from workbench.serving.export import export
    from workbench.serving.predict import predict

    run_dir, _, images = rejecting_run
    exported = export(run_dir, fmt, out=tmp_path / "export")
    answers = predict(exported, images, top_k=1)
    expected = predict(run_dir, images, top_k=1)
    assert [r["class_index"] for r in answers] == [r["class_index"] for r in expected]
    assert -1 in [r["class_index"] for r in answers]  # the threshold rejects some of them in the graph


def test_evaluate_command_fits_again_with_the_options_given(rejecting_run, capsys):
    import json

    from workbench.cli import main

    run_dir, _, _ = rejecting_run
    code = main(["evaluate", str(run_dir), "--split", "val", "--reject", "auto", "--reject-target", "coverage:0.75"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rejection (coverage:0.75)" in out and "ECE" in out
    saved = json.loads((run_dir / "calibration.json").read_text())
    assert saved["rejection"]["target"] == "coverage:0.75"
    assert saved["rejection"]["accepted"] == pytest.approx(0.75, abs=0.1)
    report = json.loads((run_dir / "eval" / "val" / "report.json").read_text())
    assert report["rejection"]["threshold"] == saved["rejection"]["value"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--reject", "1.5"], "--reject '1.5'"), (["--reject-target", "recall:0.9"], "--reject-target 'recall:0.9'")],
)
def test_bad_rejection_options_are_refused_before_any_work(flags, message, tmp_path, capsys):
    from workbench.cli import main

    assert main(["train", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
