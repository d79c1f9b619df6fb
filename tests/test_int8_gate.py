"""The int8 accuracy gate (issue 16): float32 against int8 on the validation split, overall and per class.

An int8 export that loses more than `--max-int8-drop` points (default 1.0) is refused with exit code 2 and a
message naming the drop, the classes that lose most and the ways out (more calibration images, float16, --force);
nothing is written and the previous export survives. `--force` exports anyway and the model card says so.
The decision is tested on synthetic predictions; the CLI tests use the tiny run, where a negative limit makes
any int8 model fail the gate.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_tiny_run import CLASSES, tiny_run

from workbench.serving.formats.tflite import int8_accuracy, int8_gate_refusal, worst_classes

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


def _one_hot(indices):
    return np.eye(len(CLASSES), dtype=np.float32)[indices]


def _report(float_predictions, int8_predictions, labels):
    report = int8_accuracy(labels, _one_hot(float_predictions), _one_hot(int8_predictions), CLASSES)
    return {"split": "val", **report}


# 10 images per class; float32 gets all right; int8 misses 3 reds and 1 green.
LABELS = [0] * 10 + [1] * 10 + [2] * 10
INT8 = [0] * 10 + [1] * 9 + [0] + [2] * 7 + [1] * 3


def test_the_report_gives_the_drop_overall_and_per_class():
    report = _report(LABELS, INT8, LABELS)
    assert report["num_images"] == 30
    assert report["float32_accuracy"] == 1.0 and report["int8_accuracy"] == pytest.approx(26 / 30, abs=1e-4)
    assert report["accuracy_drop_points"] == pytest.approx(100 * 4 / 30, abs=0.01)
    assert report["per_class"]["red"] == {
        "num_images": 10,
        "float32_accuracy": 1.0,
        "int8_accuracy": 0.7,
        "drop_points": 30.0,
    }
    assert report["per_class"]["blue"]["drop_points"] == 0.0
    assert worst_classes(report) == [("red", 30.0), ("green", 10.0)]  # only classes that lost something


def test_the_gate_refuses_above_the_limit_naming_the_drop_the_worst_classes_and_the_options():
    report = _report(LABELS, INT8, LABELS)
    refusal = int8_gate_refusal(report, max_drop=1.0, calibration_images=300)
    assert "13.33 accuracy points" in refusal and "30 val images" in refusal
    assert "red -30.00, green -10.00" in refusal
    for option in ("--int8-calibration-images N", "used 300", "--format tflite-fp16", "--force"):
        assert option in refusal
    assert int8_gate_refusal(report, max_drop=13.34, calibration_images=300) is None


def test_a_drop_of_exactly_the_limit_passes_and_an_int8_gain_is_no_drop():
    one_miss = [0] * 99 + [1]
    labels = [0] * 100
    report = int8_accuracy(labels, _one_hot([0] * 100), _one_hot(one_miss), CLASSES)
    assert report["accuracy_drop_points"] == 1.0
    assert int8_gate_refusal({"split": "val", **report}, 1.0, 100) is None
    gain = int8_accuracy(labels, _one_hot(one_miss), _one_hot([0] * 100), CLASSES)
    assert gain["accuracy_drop_points"] == -1.0 and worst_classes(gain) == []
    assert gain["per_class"]["red"]["num_images"] == 0 and gain["per_class"]["red"]["drop_points"] is None


def test_a_run_without_validation_images_cannot_be_checked_and_is_refused():
    refusal = int8_gate_refusal({"split": "val", "note": "the run's manifest has no val images"}, 1.0, 300)
    assert "could not be checked" in refusal and "no val images" in refusal and "--force" in refusal


def _export(tmp_path_factory, out, *options):
    from workbench.cli import main

    argv = ["export", str(tiny_run(tmp_path_factory)), "--format", "tflite-int8", "--out", str(out)]
    return main([*argv, "--int8-calibration-images", "20", *options])


@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    """A --force export past a limit every model fails: (export base, stdout, stderr). A negative limit makes
    the gate refuse even an int8 model that loses nothing (none gains 100 points)."""
    import contextlib
    import io

    out, stdout, stderr = tmp_path_factory.mktemp("forced") / "out", io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert _export(tmp_path_factory, out, "--max-int8-drop", "-100", "--force") == 0
    return out, stdout.getvalue(), stderr.getvalue()


def test_forced_export_says_so_and_records_the_figures_in_the_model_card(forced):
    out, stdout, stderr = forced
    assert "exported anyway (--force)" in stderr and "more than --max-int8-drop -100" in stderr
    assert "drop" in stdout and "calibrated on 20 images" in stdout
    card = json.loads((out / "tflite-int8" / "model_card.json").read_text())
    quantization = card["quantization"]
    assert quantization["split"] == "val" and quantization["calibration_images"] == 20
    assert card["tflite"]["calibration_images"] == 20
    assert set(quantization["per_class"]) == set(CLASSES)
    assert sum(c["num_images"] for c in quantization["per_class"].values()) == quantization["num_images"]
    gate = quantization["gate"]
    assert (gate["max_drop_points"], gate["passed"], gate["forced"]) == (-100.0, False, True)
    assert "more than --max-int8-drop -100" in gate["refusal"]
    markdown = (out / "tflite-int8" / "model_card.md").read_text()
    assert "FAILED, exported anyway with --force" in markdown and "`red` (" in markdown


def test_refused_export_exits_2_and_leaves_the_previous_export_untouched(tmp_path_factory, forced, capsys):
    out = forced[0]
    before = {p.name: p.read_bytes() for p in (out / "tflite-int8").iterdir()}
    assert _export(tmp_path_factory, out, "--max-int8-drop", "-100") == 2
    error = capsys.readouterr().err
    assert "more than --max-int8-drop -100" in error and "val images" in error and "Nothing was exported" in error
    for option in ("--int8-calibration-images N", "used 20", "--format tflite-fp16", "--force"):
        assert option in error
    assert {p.name: p.read_bytes() for p in (out / "tflite-int8").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["tflite-int8"]  # no staging folder, no .previous


@pytest.mark.parametrize("option", [["--force"], ["--max-int8-drop", "2"], ["--int8-calibration-images", "50"]])
def test_int8_options_on_another_format_are_refused_before_any_work(tmp_path_factory, tmp_path, capsys, option):
    from workbench.cli import main

    argv = ["export", str(tiny_run(tmp_path_factory)), "--format", "tflite-fp16", "--out", str(tmp_path / "o")]
    assert main([*argv, *option]) == 2
    assert "use them with --format tflite-int8" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
