"""The automatic recipe (`--recipe auto`, the default) and the time budget.

The rules are pure functions of the data, the measured speed and the budget, so most of this file needs no
training: it states what `auto` chooses and why. The last tests run the engine with a small budget.
"""

from __future__ import annotations

import time

import pytest

from workbench.engine import auto
from workbench.engine.auto import DataFacts, Speed
from workbench.engine.config import planned_paths

CIFAR_LIKE = DataFacts(train_images=2800, val_images=600, test_images=600, classes=10, median_side=32)
PHOTOS = DataFacts(train_images=700, val_images=150, test_images=150, classes=5, median_side=480)
FAST = Speed(resolution=224, forward_images_per_s=2000.0)  # a GPU
CPU = Speed(resolution=224, forward_images_per_s=80.0)  # 2 CPU cores


def decide(facts=CIFAR_LIKE, speed=CPU, budget=600.0, given=None, resolution=224):
    decisions = auto.plan(
        facts, speed, variant_resolution=resolution, batch_size=32, budget_seconds=budget, given=given or {}
    )
    return decisions, {d.path: d.value for d in decisions}


def test_the_variant_s_own_resolution_unless_the_budget_cannot_pay_for_it():
    # Small images too: upscaled to 224 px, Lite0's features beat 128-160 px on both benchmark sets.
    assert auto.choose_image_size(CIFAR_LIKE, 224, CPU, 3600).value == 224
    assert auto.choose_image_size(PHOTOS, 224, CPU, 3600).value == 224
    tight = auto.choose_image_size(CIFAR_LIKE, 224, CPU, 150)
    assert auto.MIN_RESOLUTION <= tight.value < 224 and tight.value % 32 == 0 and "fits the budget" in tight.reason
    assert auto.choose_image_size(CIFAR_LIKE, 224, CPU, 20).value == auto.MIN_RESOLUTION  # never below the floor
    sizes = [auto.choose_image_size(CIFAR_LIKE, 224, CPU, b).value for b in (60, 120, 180, 240, 600)]
    assert sizes == sorted(sizes)  # more time never buys a smaller image


def test_every_decision_names_a_planned_option_and_says_why():
    decisions, _ = decide()
    assert {d.path for d in decisions} <= set(planned_paths())
    assert all(d.reason and d.line().startswith(f"{d.path} = {d.value}: ") for d in decisions)
    assert len({d.path for d in decisions}) == len(decisions)  # one decision per option


def test_ample_time_buys_the_deepest_fine_tune_for_the_most_epochs_that_pay_off():
    _, chosen = decide(speed=FAST)
    assert chosen["recipe.unfreeze_blocks"] == auto.DEPTHS[0]
    assert chosen["fine_tune_epochs"] == auto.MAX_FINE_TUNE_EPOCHS
    assert chosen["recipe.fine_tune_learning_rate"] == auto.DEEP_FINE_TUNE_LR


def test_a_tighter_budget_costs_epochs_then_resolution_then_depth_then_phase_2():
    plans = [decide(budget=budget)[1] for budget in (3600, 900, 400, 200, 150, 120, 90, 60)]
    steps = [
        (c["image_size"], c["recipe.unfreeze_blocks"] if c["fine_tune_epochs"] else 0, c["fine_tune_epochs"])
        for c in plans
    ]
    assert steps[0] == (224, auto.DEPTHS[0], auto.MAX_FINE_TUNE_EPOCHS)  # ample time: everything that pays off
    assert steps[2][:2] == (224, auto.DEPTHS[0]) and steps[2][2] < auto.MAX_FINE_TUNE_EPOCHS  # fewer epochs first
    sizes = [size for size, _, _ in steps]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == auto.MIN_RESOLUTION  # then a smaller image
    depths = [depth for _, depth, _ in steps]
    assert depths == sorted(depths, reverse=True) and 0 < depths[-2] < auto.DEPTHS[0]  # then a shallower phase 2
    assert all(epochs >= auto.MIN_FINE_TUNE_EPOCHS for _, depth, epochs in steps[:-2] if depth == auto.DEPTHS[0])
    assert steps[-1][1:] == (0, 0)  # and none at all when not one epoch fits
    _, hopeless = decide(budget=30)
    assert hopeless["fine_tune_epochs"] == 0 and hopeless["recipe.unfreeze_blocks"] == auto.DEPTHS[-1]


def test_the_plan_fits_the_budget_by_its_own_estimates():
    for budget in (300, 600, 1200):
        _, chosen = decide(budget=budget)
        size = chosen["image_size"]
        epochs = chosen["fine_tune_epochs"]
        estimate = (
            auto.head_seconds(CIFAR_LIKE, CPU, size, chosen["epochs"])  # the feature pass and the head's epochs
            + auto.fine_tune_setup_seconds(CIFAR_LIKE, CPU, size)  # the frozen blocks' output, tracing
            + epochs * auto.fine_tune_epoch_seconds(CIFAR_LIKE, CPU, size, chosen["recipe.unfreeze_blocks"])
            + auto.finish_seconds(CIFAR_LIKE, CPU, size)  # evaluation and export
        )
        assert estimate <= budget, (budget, chosen)


def test_options_the_user_gave_are_never_chosen_and_shape_the_rest():
    _, chosen = decide(given={"image_size": 224, "recipe.unfreeze_blocks": 2, "epochs": 3})
    assert not {"image_size", "recipe.unfreeze_blocks", "epochs"} & set(chosen)
    _, at_160 = decide()
    # 224 px costs ~2x the compute of 160 px, so fewer phase-2 epochs fit the same budget
    assert chosen["fine_tune_epochs"] <= at_160["fine_tune_epochs"]
    assert chosen["recipe.fine_tune_learning_rate"] == auto.SHALLOW_FINE_TUNE_LR  # two blocks: a gentle rate
    _, given_epochs = decide(given={"fine_tune_epochs": 20})
    assert given_epochs["recipe.early_stopping_patience"] == 20  # phase 2 runs the epochs the user asked for


def test_without_a_budget_auto_spends_about_what_the_naive_loop_would_at_most_ten_minutes():
    small, _ = decide(facts=DataFacts(500, 100, 100, 6, 28), budget=None)
    budget = next(d for d in small if d.path == "time_budget")
    seconds = float(budget.value.rstrip("s"))
    naive_like = auto.DEFAULT_PASSES * CPU.forward_seconds(600, 224)  # 8 passes over the data at 224 px
    assert naive_like < seconds <= naive_like + auto.finish_seconds(DataFacts(500, 100, 100, 6, 28), CPU, 224)
    large, _ = decide(facts=DataFacts(50_000, 5_000, 5_000, 100, 400), budget=None)
    assert next(d for d in large if d.path == "time_budget").value == f"{auto.DEFAULT_MAX_SECONDS:.0f}s"
    given, _ = decide(budget=300.0)
    assert "time_budget" not in {d.path for d in given}


def test_the_head_gets_enough_steps_however_small_the_data():
    few = DataFacts(train_images=60, val_images=20, test_images=0, classes=3, median_side=200)
    _, chosen = decide(facts=few)
    assert chosen["epochs"] == auto.HEAD_EPOCHS[1]  # 2 steps per epoch: the most epochs
    _, many = decide(facts=DataFacts(50_000, 5_000, 5_000, 10, 64))
    assert many["epochs"] == auto.HEAD_EPOCHS[0]  # 1,563 steps per epoch: the fewest
    assert chosen["augment"] == "none"  # the head trains on cached features


# ------------------------------------------------------------------------------------------- the engine
def test_a_run_records_what_auto_chose_and_why(tmp_path):
    from test_engine_helpers import make_image_folder, tiny_config

    from workbench.engine import RunConfig, fine_tune
    from workbench.engine.events import read_events

    config = tiny_config(make_image_folder(tmp_path / "data", size=20), tmp_path / "runs")
    del config["epochs"], config["image_size"], config["recipe"]["early_stopping_patience"]  # left to auto
    config["fine_tune_epochs"] = 1
    result = fine_tune(config, tensorboard=False)
    saved = RunConfig.load(result.run_dir / "config.yaml")
    events = read_events(result.run_dir)
    plan = next(e for e in events if e["type"] == "plan")
    assert saved.auto_decisions == plan["decisions"]
    chosen = dict(line.split(": ", 1)[0].split(" = ") for line in saved.auto_decisions)
    assert {"time_budget", "image_size", "epochs", "recipe.early_stopping_patience"} <= set(chosen)
    assert not {"fine_tune_epochs", "recipe.learning_rate"} & set(chosen)  # given in tiny_config
    # what was chosen is what ran, and config.yaml holds it: a resumed run trains the same recipe
    phase = next(e for e in events if e["type"] == "phase")
    assert phase["image_size"] == saved.image_size == int(chosen["image_size"])
    assert plan["budget_s"] == saved.budget_seconds() and saved.time_budget == chosen["time_budget"]
    assert saved.epochs == int(chosen["epochs"]) >= auto.HEAD_EPOCHS[0] and saved.fine_tune_epochs == 1


def test_fixed_uses_the_documented_defaults_and_plans_nothing(tmp_path):
    from test_engine_helpers import make_image_folder, tiny_config

    from workbench.engine import RunConfig, fine_tune
    from workbench.engine.config import fixed_value
    from workbench.engine.events import read_events

    config = tiny_config(make_image_folder(tmp_path / "data"), tmp_path / "runs", recipe_mode="fixed")
    del config["recipe"]["early_stopping_patience"]
    result = fine_tune(config, tensorboard=False)
    saved = RunConfig.load(result.run_dir / "config.yaml")
    assert saved.recipe.early_stopping_patience == fixed_value("recipe.early_stopping_patience")
    assert saved.recipe.unfreeze_blocks == fixed_value("recipe.unfreeze_blocks")
    assert saved.auto_decisions is None
    assert not [e for e in read_events(result.run_dir) if e["type"] == "plan"]


# A wall-clock test: on a loaded machine it measures the load, not the budget; it runs with `pytest -m slow`.
@pytest.mark.slow
def test_a_small_time_budget_is_respected_evaluation_and_export_included(tmp_path):
    """45 s for a run that would take minutes: phase 1 ends early at an epoch boundary, phase 2 is skipped,
    and training, evaluation and export together finish within the budget plus 10%."""
    from test_engine_helpers import make_image_folder, tiny_config

    from workbench.engine import fine_tune
    from workbench.engine.events import read_events
    from workbench.evaluation import evaluate
    from workbench.serving.export import export

    budget = 45.0
    data = make_image_folder(tmp_path / "data", per_class=12)
    config = tiny_config(
        data,
        tmp_path / "runs",
        epochs=2000,  # ~0.2 s each on images: ~7 minutes without the budget
        augment="light",  # pixel augmentation: every epoch runs the backbone, no cached features
        time_budget=f"{budget:g}s",
        recipe={"test_fraction": 0.2, "val_fraction": 0.2},
    )
    started = time.perf_counter()
    result = fine_tune(config, tensorboard=False)
    evaluate(result.run_dir)
    export(result.run_dir, "keras")
    elapsed = time.perf_counter() - started
    events = read_events(result.run_dir)
    epochs = [e for e in events if e["type"] == "epoch"]
    budget_notes = [e for e in events if e["type"] == "budget"]
    assert elapsed <= budget * 1.1, elapsed
    assert 1 <= len(epochs) < 2000 and budget_notes
    assert result.model_path is not None and result.model_path.exists()  # the best epoch is kept
    assert {e["phase"] for e in budget_notes} == {1, 2}  # phase 1 ended early; phase 2 skipped


def test_train_help_names_the_recipe_and_the_budget(capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--recipe {auto,fixed}" in text and "--time-budget DURATION" in text
    assert "chosen by --recipe auto" in text  # the options auto chooses say so, with their fixed value
