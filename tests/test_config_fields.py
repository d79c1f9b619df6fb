"""The one config mechanism (workbench.config_fields) as the search config and `workbench scale-search` use it."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.config_fields import iter_fields, with_overrides
from workbench.scaling_search.config import Budget, ProxyConfig, SearchConfig


@pytest.mark.parametrize(
    "values, where, unknown, known",
    [
        ({"proxy": {"epochz": 3}}, "proxy", "epochz", "epochs"),
        ({"budget": {"max_flops": "2x"}}, "budget", "max_flops", "flops"),
        ({"trails": 3}, "", "trails", "trials"),
    ],
)
def test_an_unknown_key_at_any_level_of_a_search_config_is_a_value_error_naming_it(values, where, unknown, known):
    with pytest.raises(ValueError) as info:
        SearchConfig.from_dict(values)
    message = str(info.value)
    assert message.startswith(f"unknown option(s){f' in {where}' if where else ''}: {unknown};")
    assert known in message.split("known options are:")[1]


def test_a_nested_value_of_the_wrong_shape_is_a_value_error():
    with pytest.raises(ValueError, match="proxy must be a mapping"):
        SearchConfig.from_dict({"proxy": 5})
    with pytest.raises(ValueError, match=r"alpha_range=\[1\.0\] must be 2 comma-separated values"):
        SearchConfig.from_dict({"alpha_range": [1.0]})


def test_search_config_round_trips_through_json(tmp_path):
    config = SearchConfig(
        data="photos", alpha_range=(1.1, 1.9), budget=Budget(flops="2x"), proxy=ProxyConfig(epochs=2, base_width=0.25)
    )
    config.save(tmp_path / "search.json")
    assert SearchConfig.load(tmp_path / "search.json") == config
    assert [p.name for p in tmp_path.iterdir()] == ["search.json"]


def test_every_search_option_carries_help_and_its_default_is_a_valid_choice():
    for path, field, default, _ in iter_fields(SearchConfig):
        assert field.metadata.get("help"), path
        if "choices" in field.metadata:
            assert default in field.metadata["choices"], path
    assert SearchConfig().validate().proxy == ProxyConfig()


def test_scale_search_flags_are_generated_from_the_search_config():
    from workbench.cli import build_parser
    from workbench.commands.scale_search import config_from_args

    args = build_parser().parse_args(
        ["scale-search", "photos", "--max-flops", "2.2x", "--alpha-range", "1.1,1.8", "--epochs", "2", "--trials", "3"]
    )
    config = config_from_args(args)
    expected = with_overrides(
        SearchConfig(),
        {"data": "photos", "budget.flops": "2.2x", "alpha_range": (1.1, 1.8), "proxy.epochs": 2, "trials": 3},
    )
    assert config == expected
    assert config.proxy.batch_size == ProxyConfig().batch_size  # not given: the dataclass default
    # Every option of the config has a flag, so no default or help text is typed twice.
    dests = {a.dest for a in _subparser("scale-search")._actions}
    assert {path for path, *_ in iter_fields(SearchConfig)} <= dests


def test_closed_choices_are_checked_with_the_dotted_name():
    config = dataclasses.replace(SearchConfig(), proxy=ProxyConfig(execution="lazy"))
    with pytest.raises(ValueError, match=r"proxy\.execution='lazy' is not one of auto, graph, eager"):
        config.validate()


def _subparser(name: str):
    from workbench.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]
