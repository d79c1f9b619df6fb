"""RunConfig: defaults, YAML/JSON round trips, unknown keys, validation, metadata, CLI flags."""

from __future__ import annotations

import pytest

from workbench.engine.config import AUGMENTS, RecipeConfig, RunConfig, iter_fields, with_overrides


def test_defaults_suit_a_first_run():
    config = RunConfig()
    assert (config.variant, config.weights, config.data) == ("lite0", "imagenet", None)
    assert config.precision == "auto" and config.strategy == "auto"
    assert config.recipe_mode == "auto" and config.time_budget is None
    assert config.validate() is config


def test_the_automatic_recipe_chooses_only_what_was_left_empty():
    from workbench.engine.config import auto_paths, unset_paths, with_recipe_defaults

    config = RunConfig(epochs=4, recipe=RecipeConfig(unfreeze_blocks=2))
    assert "epochs" not in unset_paths(config) and "recipe.unfreeze_blocks" not in unset_paths(config)
    filled = with_recipe_defaults(config, {"fine_tune_epochs": 7, "epochs": 99})
    assert (filled.epochs, filled.recipe.unfreeze_blocks, filled.fine_tune_epochs) == (4, 2, 7)  # given ones win
    fixed = with_recipe_defaults(RunConfig())  # the fixed recipe: the values declared on the fields
    assert not unset_paths(fixed) and set(auto_paths()) >= {"epochs", "augment", "recipe.fine_tune_learning_rate"}
    assert fixed.augment == "none"  # phase 1 on cached features: fast on CPU
    assert fixed.recipe.fine_tune_learning_rate < fixed.recipe.learning_rate
    assert fixed.validate() is fixed


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("45", 45)])
def test_time_budget_reads_like_people_write_it(text, seconds):
    assert RunConfig(time_budget=text).budget_seconds() == seconds


@pytest.mark.parametrize("text", ["ten minutes", "-5m", "0s", "5x"])
def test_a_malformed_time_budget_is_refused_naming_the_flag(text):
    with pytest.raises(ValueError, match="--time-budget"):
        RunConfig(time_budget=text).validate()


def test_configs_do_not_share_nested_defaults():
    a, b = RunConfig(), RunConfig()
    a.recipe.learning_rate = 0.5
    assert b.recipe.learning_rate == RecipeConfig().learning_rate


@pytest.mark.parametrize("name", ["config.yaml", "config.json"])
def test_save_and_load_round_trip(tmp_path, name):
    config = RunConfig(
        data="flowers.zip", variant="b0", image_size=128, epochs=4, recipe=RecipeConfig(learning_rate=3e-3, dropout=0.1)
    )
    config.save(tmp_path / name)
    assert RunConfig.load(tmp_path / name) == config
    assert not [p for p in tmp_path.iterdir() if p.name != name]  # no temporary left behind


def test_unknown_keys_are_rejected_with_the_known_ones_listed():
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({"varient": "b0"})
    message = str(info.value)
    assert "varient" in message and "variant" in message and "batch_size" in message
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({"recipe": {"lr": 0.1}})
    assert "recipe" in str(info.value) and "learning_rate" in str(info.value)


def test_load_names_the_file_on_unknown_keys(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("variant: b0\nepochz: 3\n")
    with pytest.raises(ValueError, match=r"config\.yaml.*epochz"):
        RunConfig.load(path)


def test_from_dict_converts_strings_like_the_command_line_gives():
    config = RunConfig.from_dict({"epochs": "7", "image_size": "none", "recipe": {"learning_rate": "1e-2"}})
    assert config.epochs == 7 and config.image_size is None and config.recipe.learning_rate == 0.01
    with pytest.raises(ValueError, match="epochs='many' must be an integer"):
        RunConfig.from_dict({"epochs": "many"})


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"precision": "fp8"}, "precision='fp8' is not one of"),
        ({"strategy": "horovod"}, "strategy='horovod'"),
        ({"epochs": 0}, "epochs=0 must be at least 1"),
        ({"batch_size": -1}, "batch_size=-1"),
        ({"recipe.learning_rate": 0}, "learning_rate=0"),
        ({"recipe.label_smoothing": 1.5}, "label_smoothing=1.5"),
        ({"recipe.val_fraction": 1.0}, "val_fraction=1.0"),
        ({"recipe.unfreeze_blocks": -2}, "unfreeze_blocks=-2"),
    ],
)
def test_validation_names_the_option_and_the_fix(overrides, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("+", r"\+")):
        with_overrides(RunConfig(), overrides).validate()


def test_every_option_carries_help_and_closed_choices_are_listed():
    paths = []
    for path, field, default, _ in iter_fields():
        paths.append(path)
        assert field.metadata.get("help"), path
        if "choices" in field.metadata:  # an option a recipe chooses is empty, with the fixed recipe's value declared
            assert field.metadata.get("fixed", default) in field.metadata["choices"], path
    assert {"data", "variant", "precision", "strategy", "recipe.learning_rate"} <= set(paths)
    # nested dataclasses are walked, not listed as options themselves
    assert "recipe" not in paths


def test_augment_choices_match_the_pipelines_presets():
    from pipelines.augment import AUGMENT_PRESETS

    assert set(AUGMENTS) == set(AUGMENT_PRESETS)


def test_train_flags_are_generated_from_the_config():
    from workbench.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "data/flowers",
            "--variant",
            "b0",
            "--learning-rate",
            "0.01",
            "--fine-tune-epochs",
            "0",
            "--precision",
            "mixed_bfloat16",
        ]
    )
    from workbench.commands.train import _overrides

    overrides = _overrides(args)
    assert overrides == {
        "data": "data/flowers",
        "variant": "b0",
        "recipe.learning_rate": "0.01",
        "fine_tune_epochs": "0",
        "precision": "mixed_bfloat16",
    }
    config = with_overrides(RunConfig(), overrides)
    assert config.recipe.learning_rate == 0.01 and config.fine_tune_epochs == 0
    # options the user did not give keep the dataclass defaults
    assert config.batch_size == RunConfig().batch_size
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--precision", "fp8"])


def test_cli_rejects_bad_values_with_a_message_and_no_traceback(capsys):
    from workbench.cli import main

    assert main(["train", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "epochs=0 must be at least 1" in err and "Traceback" not in err
    assert main(["train", "--resume", "runs/x", "--epochs", "3"]) == 2
    assert "--resume continues a run with its saved config" in capsys.readouterr().err
