"""Comparing runs: the config diff and the curves (pure functions), and the app's Compare page, on run
directories written the way the engine writes them (RunConfig.save, EventWriter), without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.compare import ABSENT, DiffRow, config_diff, curves, flatten, format_value, phase2_start
from workbench.engine.config import RunConfig, with_overrides
from workbench.engine.events import EVENTS_FILE, EventWriter
from workbench.engine.rundir import CONFIG_FILE

APP = str(Path(__file__).resolve().parents[1] / "apps" / "workbench_app.py")


def make_run(runs_root: Path, name: str, overrides: dict, head=(0.5, 0.6), fine=(0.7,), test=None) -> Path:
    """A finished run: its config, a phase event and val accuracies per epoch for each phase, and `done`
    (and an evaluation report when `test` is given)."""
    run = runs_root / name
    run.mkdir(parents=True)
    config = with_overrides(RunConfig(), {"run_dir": str(run), **overrides})
    config.save(run / CONFIG_FILE)
    writer = EventWriter(run / EVENTS_FILE)
    for phase, accuracies, planned in ((1, head, config.epochs), (2, fine, config.fine_tune_epochs)):
        writer.phase(phase, f"phase {phase}", planned)
        for epoch, accuracy in enumerate(accuracies, 1):
            writer.batch(phase=phase, epoch=epoch, step=1, steps=1, loss=9, accuracy=0, images_per_s=1, eta_s=0)
            writer.epoch(
                phase=phase,
                epoch=epoch,
                loss=1 - accuracy,
                accuracy=accuracy,
                val_loss=1.5 - accuracy,
                val_accuracy=accuracy,
                images_per_s=10,
                eta_s=0,
            )
    writer.done(run, max(head + fine), run / "model.keras")
    if test is not None:
        (run / "eval").mkdir()
        (run / "eval" / "report.json").write_text(json.dumps({"accuracy": test}))
    return run


# ---------------------------------------------------------------------------------------------- config diff
def test_flatten_names_nested_fields_by_their_dotted_path_and_keeps_lists_whole():
    assert flatten({"epochs": 3, "recipe": {"unfreeze_blocks": 4, "extra": {"a": [1, 2]}}, "empty": {}}) == {
        "epochs": 3,
        "recipe.unfreeze_blocks": 4,
        "recipe.extra.a": [1, 2],
        "empty": {},
    }


def test_the_diff_lists_only_the_fields_that_differ_in_config_order_with_each_runs_value():
    base = RunConfig().to_dict()
    other = with_overrides(RunConfig(), {"epochs": 5, "recipe.unfreeze_blocks": 6}).to_dict()
    third = with_overrides(RunConfig(), {"recipe.dropout": 0.2}).to_dict()

    assert config_diff({"a": base, "b": other, "c": third}) == [
        DiffRow("epochs", {"a": None, "b": 5, "c": None}),  # None: left to the automatic recipe
        DiffRow("recipe.unfreeze_blocks", {"a": None, "b": 6, "c": None}),
        DiffRow("recipe.dropout", {"a": None, "b": None, "c": 0.2}),
    ]
    assert config_diff({"a": base, "b": dict(base)}) == []


def test_the_run_directory_is_not_a_difference_but_a_field_one_config_lacks_is():
    one = with_overrides(RunConfig(), {"run_dir": "runs/one"}).to_dict()
    two = with_overrides(RunConfig(), {"run_dir": "runs/two"}).to_dict()
    assert config_diff({"one": one, "two": two}) == []

    del two["recipe"]["dropout"]  # an older config without the field, whose default is null
    (row,) = config_diff({"one": one, "two": two})
    assert row == DiffRow("recipe.dropout", {"one": None, "two": ABSENT})
    assert [format_value(v) for v in row.values.values()] == ["null", "(not in config)"]


def test_values_read_as_config_yaml_writes_them():
    assert [format_value(v) for v in (None, True, 0.001, 3, [1, 2], "light")] == [
        "null",
        "true",
        "0.001",
        "3",
        "[1, 2]",
        "light",
    ]


# ---------------------------------------------------------------------------------------------- curves
def test_curves_put_both_phases_on_one_epoch_axis_from_the_events(tmp_path):
    run = make_run(tmp_path, "r1", {"epochs": 3, "fine_tune_epochs": 2}, head=(0.5, 0.6), fine=(0.7, 0.8))
    config = RunConfig.load(run / CONFIG_FILE).to_dict()

    rows = curves(run, config)

    # Phase 1 planned 3 epochs and stopped early after 2: phase 2 still starts at 3, as on the Train page.
    assert [(r["run"], r["phase"], r["epoch"], r["val_accuracy"]) for r in rows] == [
        ("r1", 1, 1.0, 0.5),
        ("r1", 1, 2.0, 0.6),
        ("r1", 2, 4.0, 0.7),
        ("r1", 2, 5.0, 0.8),
    ]
    assert rows[0]["val_loss"] == pytest.approx(1.0) and rows[0]["loss"] == pytest.approx(0.5)


def test_an_epoch_logged_twice_by_a_resumed_run_keeps_its_last_values(tmp_path):
    run = make_run(tmp_path, "r1", {"epochs": 2, "fine_tune_epochs": 0}, head=(0.5, 0.6), fine=())
    EventWriter(run / EVENTS_FILE).epoch(
        phase=1, epoch=2, loss=0.1, accuracy=0.9, val_loss=0.2, val_accuracy=0.65, images_per_s=1, eta_s=0
    )
    assert [(r["epoch"], r["val_accuracy"]) for r in curves(run, {})] == [(1.0, 0.5), (2.0, 0.65)]


def test_a_run_without_events_has_no_curve_and_phase_2_falls_back_to_the_configured_epochs(tmp_path):
    (tmp_path / "new").mkdir()
    assert curves(tmp_path / "new", {"epochs": 4}) == []
    assert phase2_start({"epochs": 4}, []) == 4.0
    assert phase2_start({"epochs": 4}, [{"type": "phase", "phase": 1, "name": "head", "epochs": 6}]) == 6.0


# ---------------------------------------------------------------------------------------------- the page
@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty folder to run the app in, as `workbench app` would be started in."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_compare_page_shows_summaries_curves_and_the_differing_field(workspace):
    from streamlit.testing.v1 import AppTest

    runs_root = workspace / "runs"
    make_run(runs_root, "20260101-000000-lite0-aaaa", {"recipe.unfreeze_blocks": 3}, test=0.75)
    make_run(runs_root, "20260101-000001-lite0-bbbb", {"recipe.unfreeze_blocks": 6}, fine=(0.9,))

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.radio(key="section").set_value("Compare").run()
    assert not at.exception, [e.value for e in at.exception]

    # The two newest runs are chosen at first, newest first.
    assert at.multiselect(key="compare_runs").value == ["20260101-000001-lite0-bbbb", "20260101-000000-lite0-aaaa"]
    summary, diff = (table.value for table in at.dataframe)
    assert list(summary["run"]) == ["20260101-000001-lite0-bbbb", "20260101-000000-lite0-aaaa"]
    assert list(summary["status"]) == ["done", "done"]
    assert list(summary["best val accuracy"]) == [0.9, 0.7]
    assert summary["test accuracy"].iloc[1] == 0.75 and summary["test accuracy"].isna().iloc[0]

    assert len(at.get("vega_lite_chart")) == 2  # validation accuracy and loss, a line per run
    assert list(diff.index) == ["recipe.unfreeze_blocks"]
    assert diff.loc["recipe.unfreeze_blocks"].tolist() == ["6", "3"]

    # One run is not a comparison: the page says what to do instead of drawing half of one.
    at.multiselect(key="compare_runs").set_value(["20260101-000000-lite0-aaaa"]).run()
    assert not at.dataframe and "two runs or more" in at.info[0].value
