"""The learning-rate finder (issue 12): the pure rules on known curves, and `workbench lr-find` on a tiny dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_engine_helpers import make_image_folder

from workbench.engine.lr_finder import LRFindConfig, flat_note, smooth, suggest, sweep_rates


def test_sweep_is_exponential_and_smoothing_is_bias_corrected():
    rates = sweep_rates(1e-5, 10.0, 7)
    np.testing.assert_allclose(rates, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10])
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # not pulled towards 0 at the start
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = sweep_rates(1e-5, 10.0, 61)
    x = np.log10(rates)
    # A loss that falls fastest at 1e-3, bottoms out at 1e-1 and then diverges.
    loss = 2 - np.tanh(x + 3) + np.where(x > -1, 10 * (x + 1) ** 2, 0.0)
    steepest, lowest = suggest(list(rates), list(loss))
    assert steepest == pytest.approx(1e-3, rel=0.13)
    assert lowest == pytest.approx(rates[int(np.argmin(loss))])
    assert suggest([1e-3, 1e-2, 1e-1], [1.0, 2.0, 3.0]) == pytest.approx((1e-4, 1e-3))  # minimum first: its tenth
    assert flat_note([1.1, 1.1, 1.09]) is not None and flat_note([1.1, 0.8, 2.0]) is None


def test_bad_sweeps_are_refused_with_the_flag_to_fix():
    with pytest.raises(ValueError, match="--start-lr"):
        LRFindConfig(start_lr=1.0, end_lr=0.1).validate()
    with pytest.raises(ValueError, match="--steps"):
        LRFindConfig(steps=3).validate()


def test_cli_sweeps_cached_features_plots_and_suggests(tmp_path, capsys):
    from workbench.cli import main

    data = make_image_folder(tmp_path / "data", per_class=10)
    argv = ["lr-find", str(data), "--variant", "phi=-4", "--weights", "none", "--image-size", "32"]
    assert main([*argv, "--steps", "30", "--batch-size", "8", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    (directory,) = (tmp_path / "out").iterdir()
    saved = json.loads((directory / "lr_find.json").read_text())
    rates, losses = saved["learning_rates"], saved["losses"]
    assert len(rates) == len(losses) == len(saved["smoothed"]) and 2 <= len(rates) <= 30
    np.testing.assert_allclose(rates, sweep_rates(1e-5, 10.0, 30)[: len(rates)])
    assert losses[0] == pytest.approx(np.log(3), rel=1e-3)  # the zero head starts at ln(classes)
    assert f"suggested learning rate: {saved['suggestion']:.2g}" in out
    assert f"--learning-rate {saved['suggestion']:.2g}" in out
    with np.load(directory / "features.npz") as cache:  # the engine's feature cache format
        assert cache["train_x"].shape[0] == cache["train_y"].shape[0] > 0
    with Image.open(directory / "lr_find.png") as plot:
        assert plot.format == "PNG" and plot.width >= 600
