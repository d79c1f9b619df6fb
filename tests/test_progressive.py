"""Progressive learning (EfficientNetV2) and training from scratch.

The schedule is a pure function: small images and weak regularisation first, the target size and the run's full
regularisation last. The engine trains it stage by stage within one phase and one learning-rate schedule,
validates at the target size, and saves a model at the target size like any other run's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_engine_helpers import make_image_folder, tiny_config

from pipelines.augment import get_preset
from workbench.engine import RunConfig, fine_tune, resume
from workbench.engine.events import read_events
from workbench.engine.phases import Phase
from workbench.engine.progressive import MIN_REGULARISATION, schedule
from workbench.engine.recipe import recipe_phases
from workbench.models import build_model

STRONG = get_preset("strong")


def test_images_grow_from_half_the_target_to_the_target_across_contiguous_stages():
    stages = schedule(12, 224, STRONG, 0.3)
    assert [s.image_size for s in stages] == [112, 152, 184, 224]
    assert [(s.first, s.end) for s in stages] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert all(s.image_size % 8 == 0 for s in stages)


def test_regularisation_grows_from_a_third_to_the_run_s_own_and_mixup_from_nothing():
    stages = schedule(12, 224, STRONG, 0.3)
    first, last = stages[0], stages[-1]
    assert first.rand_augment_factor == pytest.approx(STRONG.rand_augment_factor * MIN_REGULARISATION)
    assert first.dropout == pytest.approx(0.3 * MIN_REGULARISATION)
    assert (last.rand_augment_factor, last.mixup_alpha, last.dropout) == pytest.approx(
        (STRONG.rand_augment_factor, STRONG.mixup_alpha, 0.3)
    )
    for field in ("image_size", "rand_augment_factor", "mixup_alpha", "dropout"):
        values = [getattr(s, field) for s in stages]
        assert values == sorted(values), field
    # Beta(0, 0) is no distribution: the first stage mixes nothing, later ones MixUp/CutMix as the preset does
    assert not first.preset(STRONG).mix and last.preset(STRONG).mix
    assert last.preset(STRONG).crop_scale == STRONG.crop_scale  # crop and flip are the preset's throughout


def test_short_phases_and_a_single_stage():
    assert [(s.first, s.end) for s in schedule(2, 64, STRONG, 0.2)] == [(0, 1), (1, 2)]
    assert schedule(0, 64, STRONG, 0.2) == []
    (only,) = schedule(5, 64, STRONG, 0.2, stages=1)  # one stage: plain training at the target, full strength
    assert (only.first, only.end, only.image_size, only.dropout) == (0, 5, 64, 0.2)
    assert schedule(8, 40, STRONG, 0.2)[0].image_size == 32  # never below the network's total stride
    with pytest.raises(ValueError, match="stages"):
        schedule(8, 64, STRONG, 0.2, stages=0)


def test_progressive_is_for_phases_that_see_images_and_from_scratch_needs_random_weights():
    with pytest.raises(ValueError, match="head alone"):
        Phase(1, "head", epochs=3, learning_rate=1e-3, progressive=True)
    with pytest.raises(ValueError, match="--weights none"):
        RunConfig(from_scratch=True).validate()
    with pytest.raises(ValueError, match="progressive_stages"):
        RunConfig.from_dict({"recipe": {"progressive_stages": 0}}).validate()
    # off unless asked: on 2 CPU cores it was not faster to the same accuracy (README, "From scratch, and progressive")
    scratch = RunConfig(from_scratch=True, weights="none", epochs=4)
    assert [(p.scratch, p.progressive, p.unfreeze_blocks) for p in recipe_phases(scratch)] == [(True, False, None)]
    asked = RunConfig.from_dict(
        {"epochs": 2, "fine_tune_epochs": 2, "progressive": True, "recipe": {"unfreeze_blocks": 3}}
    )
    assert [p.progressive for p in recipe_phases(asked)] == [False, True]  # phase 2 only: phase 1 trains the head


# A minute of training on 2 cores: with the suite near its 25-minute limit, it runs with `pytest -m slow`.
@pytest.mark.slow
def test_from_scratch_trains_every_layer_progressively_and_saves_a_model_at_the_target_size(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=16)
    config = tiny_config(
        data,
        tmp_path,
        from_scratch=True,
        progressive=True,
        epochs=2,
        image_size=48,
        augment="light",
        recipe={"progressive_stages": 2, "progressive_dropout": True},
    )
    result = fine_tune(config, tensorboard=False)
    events = read_events(result.run_dir)

    (phase,) = [e for e in events if e["type"] == "phase"]
    assert phase["progressive"] and phase["unfrozen_blocks"][0] == "stem" and phase["unfrozen_blocks"][-1] == "top"
    stages = [e for e in events if e["type"] == "stage"]
    assert [(s["stage"], s["first_epoch"], s["last_epoch"], s["image_size"]) for s in stages] == [
        (1, 1, 1, 32),
        (2, 2, 2, 48),
    ]
    dropouts = [s["dropout"] for s in stages]
    assert dropouts == sorted(dropouts) and dropouts[0] < dropouts[-1]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]  # one phase, one schedule
    rates = [e["learning_rate"] for e in events if e["type"] == "epoch"]
    assert rates[-1] < max(rates)  # one cosine decay across the stages, not one per stage

    model = keras.saving.load_model(result.model_path, compile=False)
    assert model.input_shape == (None, 48, 48, 3)  # served at the target size, like any run
    built = build_model("phi=-4", 3, input_shape=(48, 48, 3)).get_layer("top_dropout").rate
    assert model.get_layer("top_dropout").rate == pytest.approx(built)  # the built rate, not a stage's
    # BatchNorm learnt its statistics (from scratch they start at mean 0, variance 1)
    moving_mean = model.get_layer("stem_bn").moving_mean
    assert np.abs(keras.ops.convert_to_numpy(moving_mean)).max() > 1e-3


@pytest.mark.slow  # ~25 s: a run stopped inside a stage, then resumed
def test_a_progressive_phase_resumes_in_the_stage_it_stopped_in(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10)
    run_dir = tmp_path / "run"

    def stop_in_epoch_three(event):
        if event["type"] == "batch" and event["epoch"] == 3:
            (run_dir / "STOP").write_text("")

    config = tiny_config(
        data,
        tmp_path,
        run_dir=str(run_dir),
        epochs=1,
        fine_tune_epochs=4,
        progressive=True,
        image_size=48,
        recipe_mode="fixed",  # no speed probe: the stages are the subject
    )
    first = fine_tune(config, listeners=[stop_in_epoch_three], tensorboard=False)
    assert first.stopped
    resumed = resume(run_dir, tensorboard=False)
    assert not resumed.stopped and resumed.model_path.exists()
    events = read_events(run_dir)
    epochs = [(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"]
    assert epochs == [(1, 1), (2, 1), (2, 2), (2, 3), (2, 4)]
    stages = [(e["stage"], e["image_size"], e["dropout"]) for e in events if e["type"] == "stage"]
    # stage 3 again after the resume; the dropout stays the model's unless recipe.progressive_dropout asks
    assert stages == [(1, 32, None), (2, 40, None), (3, 40, None), (3, 40, None), (4, 48, None)]
