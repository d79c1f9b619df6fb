"""Honest results (issue 12): the rules that decide when an accuracy says nothing."""

from __future__ import annotations

import math

import pytest

from workbench.engine.chance import (
    accuracy_noise,
    chance_accuracy,
    chance_band,
    clearly_above_chance,
    search_warning,
    train_warning,
)


def test_chance_is_the_largest_class_share():
    assert chance_accuracy([3] * 10) == pytest.approx(0.1)
    assert chance_accuracy([80, 10, 10]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least one image"):
        chance_accuracy([0, 0])


def test_the_band_of_guessing_shrinks_with_the_validation_size():
    # 10 balanced classes, 30 validation images: 0.1 + 2 * sqrt(0.09 / 30) = 0.2095
    assert chance_band([3] * 10) == pytest.approx(0.1 + 2 * math.sqrt(0.09 / 30))
    assert not clearly_above_chance(0.10, [3] * 10)  # the search: every candidate at 0.10
    assert not clearly_above_chance(0.20, [3] * 10)
    assert clearly_above_chance(0.25, [3] * 10)
    assert clearly_above_chance(0.15, [100] * 10)  # the same 0.15 is signal on 1,000 images
    assert not clearly_above_chance(0.79, [80, 10, 10])  # always saying "majority" scores 0.8


def test_accuracy_noise_never_claims_certainty():
    assert accuracy_noise(1.0, 3) > 0 and accuracy_noise(0.0, 3) > 0
    assert accuracy_noise(0.5, 1000) == pytest.approx(math.sqrt(0.25 / 1004), rel=1e-3)
    assert accuracy_noise(0.5, 100) > accuracy_noise(0.5, 1000)


def test_train_warning_names_the_likely_causes_only_at_chance():
    settings = dict(train_counts=[20] * 10, epochs=2, fine_tune_epochs=0, image_size=32, learning_rate=1e-3)
    warning = train_warning(0.10, [3] * 10, **settings)
    assert warning is not None
    for cause in ("not clearly above chance", "0.100", "images per class", "20 to 20", "epochs", "32 px", "0.001"):
        assert cause in warning, cause
    assert "lr-find" in warning
    assert train_warning(0.9, [3] * 10, **settings) is None
    assert train_warning(None, [3] * 10, **settings) is None  # no epoch completed: nothing to judge


def test_search_warning_at_chance_within_noise_or_clear():
    at_chance = search_warning([0.10, 0.10, 0.10], [3] * 10)
    assert "not clearly above chance" in at_chance and "--val-per-class" in at_chance and "--epochs" in at_chance
    close = search_warning([0.62, 0.60], [50] * 10)  # 2 points apart on 500 images: noise is about 4.3
    assert "within the noise" in close and "0.620" in close and "--base-resolution" in close
    assert search_warning([0.70, 0.55], [50] * 10) is None
    assert search_warning([0.70], [50] * 10) is None  # one candidate: only the chance rule applies
    assert search_warning([], [50] * 10) is None


def test_save_anyway_is_a_plain_flag_generated_from_the_search_config():
    import argparse

    from workbench.config_fields import add_arguments, overrides_from_args, with_overrides
    from workbench.scaling_search.config import SearchConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser, SearchConfig, positional=("data",))
    for argv, expected in ((["d", "--save-anyway"], True), (["d", "--save-anyway", "false"], False), (["d"], False)):
        overrides = overrides_from_args(parser.parse_args(argv), SearchConfig)
        assert with_overrides(SearchConfig(), overrides).save_anyway is expected
    assert "save_anyway" in SearchConfig.RESUMABLE_CHANGES  # asking for it later does not restart a search
