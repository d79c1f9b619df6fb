"""Comparing runs: the config fields where they differ, and their per-epoch curves on one epoch axis.

Pure functions over what run directories hold; no Streamlit and no TensorFlow, so they are tested (and
usable) without the app. The app's Compare page (`apps/compare_section.py`) draws them. Each run's summary
(best validation accuracy, test accuracy, duration, status) is not computed here: it is the row that
`workbench runs` prints (`workbench.commands.runs.describe_run`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

# Fields that name where a run lives rather than how it trained: every run differs there, so a diff that
# listed them would bury the settings that matter. The run's id already heads its column.
IDENTITY_FIELDS = ("run_dir",)


class _Absent:
    """The value of a field a run's config does not have (an older config, or no config.yaml yet): not the
    same as a field set to null."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class DiffRow(NamedTuple):
    """One config field that is not the same in every run: its dotted name and each run's value."""

    field: str
    values: dict[str, Any]  # run name -> value, ABSENT where that run's config lacks the field


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (`{"recipe": {"dropout": 0.2}}` -> `recipe.dropout`).

    Lists and other values stay whole: a list that differs is one difference. An empty mapping is kept as
    a value, so a run whose `recipe` is `{}` still differs from one that has no `recipe` at all.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> list[DiffRow]:
    """The flattened fields whose values are not all equal across `configs` (run name -> config dict).

    Rows come in the order the fields first appear (config.yaml keeps the `RunConfig` order); identical
    configs give []. `IDENTITY_FIELDS` are left out.
    """
    flat = {run: flatten(config) for run, config in configs.items()}
    fields = list(dict.fromkeys(name for values in flat.values() for name in values))
    rows = []
    for name in fields:
        if name in IDENTITY_FIELDS:
            continue
        values = {run: run_values.get(name, ABSENT) for run, run_values in flat.items()}
        first, *others = values.values()
        if any(not _same(first, other) for other in others):
            rows.append(DiffRow(name, values))
    return rows


def _same(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    return a == b


def format_value(value: Any) -> str:
    """A config value as config.yaml reads it (`null`, `true`, `0.001`, `[1, 2]`; strings bare), and an
    absent field as `(not in config)`: one text type, so a table column can mix them."""
    if value is ABSENT:
        return "(not in config)"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def phase2_start(config: Mapping[str, Any], events: list[dict]) -> float:
    """Where phase 2 starts on a run's epoch axis: after the epochs phase 1 planned (its `phase` event, else
    the config's `epochs`), so an early-stopped phase 1 leaves a gap rather than shifting phase 2."""
    start = float(config.get("epochs") or 0)
    for event in events:
        if event["type"] == "phase" and event.get("phase") == 1 and isinstance(event.get("epochs"), (int, float)):
            start = float(event["epochs"])
    return start


def curves(run_dir: str | Path, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per finished epoch of the run in `run_dir`, read from its events.jsonl
    (`workbench.engine.events`), on one epoch axis across both phases (`phase2_start`).

    Row keys: `run` (the folder's name), `phase`, `epoch` (on that axis), `loss`, `accuracy`, `val_loss`,
    `val_accuracy` (None where the event had none). An epoch logged twice (a run killed after logging
    it and resumed before its checkpoint) keeps its last values.
    """
    from workbench.engine.events import read_events

    run_dir = Path(run_dir)
    events = read_events(run_dir)
    offsets = {1: 0.0, 2: phase2_start(config, events)}
    by_epoch: dict[tuple[Any, Any], dict[str, Any]] = {}
    for event in events:
        if event["type"] != "epoch":
            continue
        phase, epoch = event.get("phase"), event.get("epoch")
        if not isinstance(epoch, (int, float)):
            continue  # a hand-edited or foreign line: nothing to place on the axis
        by_epoch[(phase, epoch)] = {
            "run": run_dir.name,
            "phase": phase,
            "epoch": offsets.get(phase, 0.0) + epoch,
            **{key: event.get(key) for key in ("loss", "accuracy", "val_loss", "val_accuracy")},
        }
    return sorted(by_epoch.values(), key=lambda row: row["epoch"])
