"""Specification of `workbench search`: the spaces as data, learned augmentation policies, recipe files and
`train --recipe FILE`, pruning from per-epoch results, and (slow) a tiny search that finishes, resumes, shares
its phase-1 features and writes a recipe the engine trains with."""

from __future__ import annotations

import json

import pytest

from workbench.engine.config import AUGMENTS, RunConfig, with_overrides
from workbench.hparam_search import HParamSearchConfig, apply_recipe_file, load_recipe, save_recipe
from workbench.hparam_search import space as spaces

RECIPE_OPTIONS = {
    "recipe.learning_rate",
    "recipe.fine_tune_learning_rate",
    "recipe.weight_decay",
    "recipe.label_smoothing",
    "recipe.unfreeze_blocks",
    "recipe.dropout",
    "image_size",
    "augment",
}


def test_recipe_space_searches_the_issues_eight_options_and_every_point_is_a_valid_run_config():
    dims = spaces.dims("recipe", [128, 160])
    assert {d.name for d in dims} == RECIPE_OPTIONS
    grid = spaces.grid(dims)
    assert grid["image_size"] == [128, 160] and "autoaugment" in grid["augment"]
    for i in range(3):  # every grid corner trains: the overrides make a valid RunConfig
        point = {name: values[i % len(values)] for name, values in grid.items()}
        with_overrides(RunConfig(weights="none"), spaces.overrides("recipe", point, [128, 160])).validate()


def test_augment_space_is_randaugment_n_m_and_mix_strength_as_one_preset_name():
    from pipelines.augment import get_preset

    assert [d.name for d in spaces.dims("augment", [96])] == [
        "rand_augment_ops",
        "rand_augment_magnitude",
        "mix_strength",
    ]
    options = spaces.overrides(
        "augment", {"rand_augment_ops": 2, "rand_augment_magnitude": 0.45, "mix_strength": 0.2}, [96]
    )
    assert options == {"augment": "randaugment:2,0.45,0.2", "image_size": 96}
    preset = get_preset(options["augment"])
    assert (preset.rand_augment_ops, preset.rand_augment_factor, preset.mix, preset.mixup_alpha) == (2, 0.45, True, 0.2)
    assert not get_preset("randaugment:1,0.3,0").mix  # strength 0: no MixUp/CutMix


def test_a_learned_policy_is_a_valid_augment_option_and_a_malformed_one_is_refused():
    assert "randaugment:2,0.3,0.1" in AUGMENTS and "light" in AUGMENTS
    assert "randaugment:9,0.3,0.1" not in AUGMENTS and "randaugment:two" not in AUGMENTS
    with_overrides(RunConfig(weights="none"), {"augment": "randaugment:3,0.9,0.4"}).validate()
    with pytest.raises(ValueError, match="augment"):
        with_overrides(RunConfig(weights="none"), {"augment": "randaugment:3,1.5,0"}).validate()


def test_the_baseline_trial_is_the_fixed_recipe():
    point = spaces.baseline("recipe", [128, 224], variant_resolution=224, variant_dropout=0.2)
    assert point["recipe.learning_rate"] == 1e-3 and point["recipe.fine_tune_learning_rate"] == 1e-4
    assert point["image_size"] == 224 and point["augment"] == "none" and point["recipe.unfreeze_blocks"] == 3


def test_search_options_are_checked_before_any_work():
    HParamSearchConfig().validate()
    for bad, match in (
        ({"strategy": "random"}, "strategy"),
        ({"resolutions": "big"}, "resolutions"),
        ({"time_budget": "soon"}, "time-budget"),
        ({"trials": 0}, "trials"),
        ({"objective": "latency"}, "objective"),
    ):
        with pytest.raises(ValueError, match=match):
            with_overrides(HParamSearchConfig(), bad).validate()


def test_recipe_file_round_trip_and_train_flags_win(tmp_path):
    path = save_recipe(
        tmp_path / "best.yaml",
        {"recipe.learning_rate": 0.002, "augment": "autoaugment", "image_size": 160},
        {"search_dir": "runs/search-1", "trial": 4, "val_accuracy": 0.8},
    )
    options, source = load_recipe(path)
    assert options["augment"] == "autoaugment" and source["trial"] == 4
    applied = apply_recipe_file(path, {"data": "photos", "image_size": "192", "recipe_mode": str(path)})
    assert applied["image_size"] == "192"  # the user's flag wins over the file
    assert applied["recipe.learning_rate"] == 0.002 and applied["recipe_mode"] == "auto"
    assert "runs/search-1" in applied["recipe_source"] and "trial 4" in applied["recipe_source"]
    config = with_overrides(RunConfig(weights="none"), applied).validate()
    assert config.augment == "autoaugment" and config.recipe.learning_rate == 0.002


def test_bad_recipe_files_are_refused_with_the_file_named(tmp_path):
    with pytest.raises(ValueError, match="not a recipe file"):
        (tmp_path / "x.yaml").write_text("learning_rate: 1\n")
        load_recipe(tmp_path / "x.yaml")
    with pytest.raises(ValueError, match="may not"):
        save_recipe(tmp_path / "y.yaml", {"data": "elsewhere"}, {})
    (tmp_path / "z.yaml").write_text("kind: workbench-recipe\noptions: {recipe.dropout: 2}\n")
    with pytest.raises(ValueError, match=r"z\.yaml.*dropout"):
        load_recipe(tmp_path / "z.yaml")
    with pytest.raises(ValueError, match="cannot read recipe file"):
        apply_recipe_file(tmp_path / "missing.yaml", {})


def test_a_recipe_file_as_recipe_mode_must_be_applied_first():
    assert "best.yaml" in RunConfig.__dataclass_fields__["recipe_mode"].metadata["choices"]  # --recipe FILE parses
    with pytest.raises(ValueError, match="apply_recipe_file"):
        RunConfig(weights="none", recipe_mode="best.yaml").validate()


def test_pruning_stops_a_trial_below_the_median_with_a_stop_file(tmp_path):
    import optuna

    from workbench.engine.rundir import stop_requested
    from workbench.hparam_search.search import _EpochReporter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for good in (0.8, 0.9):  # two finished trials set the median
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(good, epoch)
        study.tell(trial, good)
    trial = study.ask()
    reporter = _EpochReporter(trial, tmp_path, phase1_epochs=2, prune=True)
    reporter({"type": "epoch", "phase": 1, "epoch": 1, "val_accuracy": 0.3})
    assert reporter.pruned and stop_requested(tmp_path) and reporter.epochs == 1
    reporter({"type": "epoch", "phase": 2, "epoch": 1, "val_accuracy": 0.3})
    assert reporter.epochs == 3  # phase-2 epochs count after phase 1's


def test_search_and_genetic_scale_search_are_commands():
    from workbench.cli import build_parser
    from workbench.scaling_search.config import STRATEGIES

    assert "genetic" in STRATEGIES
    args = build_parser().parse_args(
        ["search", "photos", "--space", "augment", "--strategy", "genetic", "--trials", "3"]
    )
    assert (args.space, args.strategy, args.trials) == ("augment", "genetic", "3")
    args = build_parser().parse_args(["train", "photos", "--recipe", "best.yaml"])
    assert args.recipe_mode == "best.yaml"


# ---------------------------------------------------------------------------------------------- a real search
@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    from helpers_tiny_run import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("search") / "images", per_class=16)


def _tiny_search(images, search_dir, trials: int, **options) -> HParamSearchConfig:
    values = dict(
        data=str(images),
        variant="phi=-8",
        weights="none",
        resolutions="32",
        trials=trials,
        epochs=2,
        fine_tune_epochs=0,
        train_per_class=10,
        val_per_class=4,
        batch_size=8,
        search_dir=str(search_dir),
        save_anyway=True,
        time_budget="10m",
    )
    values.update(options)
    return HParamSearchConfig(**values)


@pytest.mark.slow
def test_tiny_search_finishes_shares_features_resumes_and_writes_a_recipe(tiny_images, tmp_path):
    from workbench.engine.events import read_events
    from workbench.hparam_search import run_search

    search_dir = tmp_path / "search"
    result = run_search(_tiny_search(tiny_images, search_dir, 2))
    assert [r["status"] for r in result.rows] == ["trained", "trained"]
    assert result.rows[0]["baseline"]  # the fixed recipe is trial 0
    assert result.rows[1]["shared_features"]  # the second trial reused the first one's phase-1 features
    assert (search_dir / "study.db").exists() and result.table_csv.exists() and result.plot.exists()
    options, source = load_recipe(result.recipe_path)
    assert options == result.chosen["options"] and source["trial"] == result.chosen["number"]
    assert source["search_dir"] == str(search_dir)

    again = run_search(_tiny_search(tiny_images, search_dir, 3))  # continues: one more trial, none repeated
    assert [r["number"] for r in again.rows] == [0, 1, 2]
    starts = [e for e in read_events(search_dir) if e["type"] == "trial" and e["status"] == "start"]
    assert len(starts) == 3
    with pytest.raises(ValueError, match="other options"):
        run_search(_tiny_search(tiny_images, search_dir, 3, epochs=3))
    table = json.loads(again.table_json.read_text())
    assert table["space"] == "recipe" and len(table["trials"]) == 3


@pytest.mark.slow
def test_train_with_a_searched_recipe_file_applies_it(tiny_images, tmp_path):
    from workbench.engine.recipe import fine_tune

    recipe = save_recipe(
        tmp_path / "best.yaml",
        {
            "recipe.learning_rate": 0.003,
            "recipe.label_smoothing": 0.05,
            "augment": "randaugment:1,0.2,0",
            "image_size": 32,
        },
        {"search_dir": "somewhere", "trial": 2},
    )
    overrides = apply_recipe_file(
        recipe,
        {
            "data": str(tiny_images),
            "variant": "phi=-8",
            "weights": "none",
            "epochs": "1",
            "fine_tune_epochs": "0",
            "batch_size": "8",
            "run_dir": str(tmp_path / "run"),
            "time_budget": "5m",
        },
    )
    result = fine_tune(with_overrides(RunConfig(), overrides), tensorboard=False)
    saved = RunConfig.load(result.run_dir / "config.yaml")
    assert saved.recipe.learning_rate == 0.003 and saved.recipe.label_smoothing == 0.05
    assert saved.augment == "randaugment:1,0.2,0" and saved.image_size == 32
    assert saved.recipe_source.startswith(str(recipe)) and saved.recipe_mode == "auto"


@pytest.mark.slow
def test_multi_objective_genetic_search_returns_a_pareto_front(tiny_images, tmp_path):
    from workbench.hparam_search import run_search

    result = run_search(
        _tiny_search(
            tiny_images, tmp_path / "s", 2, strategy="genetic", objective="accuracy,latency", resolutions="32,48"
        )
    )
    assert all(r["latency_ms"] > 0 for r in result.rows)
    assert result.pareto and result.chosen in result.pareto


def test_app_search_page_builds_the_command_and_the_live_trials_table(tmp_path):
    from apps.search_section import search_command, search_dirs, trial_rows

    argv = search_command("photos", tmp_path / "search-1", {"space": "augment", "time_budget": "5m"})
    assert argv[3:] == [
        "search",
        "photos",
        "--space",
        "augment",
        "--time-budget",
        "5m",
        "--search-dir",
        str(tmp_path / "search-1"),
    ]
    events = [
        {"type": "trial", "status": "start", "number": 0, "params": {"recipe.learning_rate": 0.001}},
        {"type": "trial", "status": "trained", "number": 0, "val_accuracy": 0.81234, "params": {}},
        {"type": "trial", "status": "start", "number": 1, "params": {"recipe.learning_rate": 0.01}},
    ]
    assert trial_rows(events) == [
        {"trial": 0, "status": "trained", "learning_rate": 0.001, "val_accuracy": 0.8123},
        {"trial": 1, "status": "running", "learning_rate": 0.01},
    ]
    (tmp_path / "search-2").mkdir()
    (tmp_path / "search-2" / "search.json").write_text('{"space": "recipe"}')
    (tmp_path / "search-3").mkdir()
    (tmp_path / "search-3" / "search.json").write_text('{"strategy": "grid"}')  # a scale search: not listed
    assert search_dirs(tmp_path) == [tmp_path / "search-2"]


def test_a_search_of_multi_label_data_is_refused_with_what_to_do(tmp_path):
    from helpers_multilabel import make_multilabel_data

    from workbench.hparam_search import run_search

    labels = make_multilabel_data(tmp_path / "data", n=40)
    with pytest.raises(ValueError, match="multi-label data; `workbench search` ranks trials"):
        run_search(_tiny_search(labels, tmp_path / "search", 1))


def test_the_winner_must_beat_the_fixed_recipe_by_more_than_the_noise_or_the_fixed_recipe_is_kept():
    from workbench.hparam_search.search import pick_winner

    def trial(number, accuracy, seconds, baseline=False):
        return {"number": number, "val_accuracy": accuracy, "trial_seconds": seconds, "baseline": baseline}

    fixed = trial(0, 0.80, 30.0, baseline=True)
    # on 100 images the noise of a difference near 0.85 is about 0.05
    assert pick_winner([fixed, trial(1, 0.84, 10.0)], "trial_seconds", 100) is fixed
    clearly = trial(2, 0.95, 50.0)
    assert pick_winner([fixed, trial(1, 0.84, 10.0), clearly], "trial_seconds", 100) is clearly
    # with many more validation images the same gap is real
    assert pick_winner([fixed, trial(1, 0.84, 10.0)], "trial_seconds", 5000)["number"] == 1
    assert pick_winner([], "trial_seconds", 100) is None
