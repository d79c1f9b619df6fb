"""`workbench runs`: the table of runs, from hand-made run directories (no training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from workbench.cli import main
from workbench.commands.runs import format_table, list_runs
from workbench.engine.events import EventWriter
from workbench.engine.rundir import pid_file

REPO = Path(__file__).resolve().parents[1]


def make_run(out: Path, name: str, *, end: str | None, val=(0.5, 0.8, 0.7), test=None, config=None) -> Path:
    """A run directory as the engine leaves it: config.yaml, events.jsonl (and eval/report.json)."""
    run = out / name
    (run / "checkpoints").mkdir(parents=True)
    values = {"data": "photos/", "variant": "lite0", "image_size": None, "epochs": 3, "fine_tune_epochs": 2}
    values |= {"augment": "light", "recipe": {"unfreeze_blocks": 4}, **(config or {})}
    (run / "config.yaml").write_text(yaml.safe_dump(values))
    writer = EventWriter(run / "events.jsonl")
    writer.phase(1, "head", 3, image_size=224)
    for epoch, accuracy in enumerate(val, 1):
        writer.epoch(
            phase=1, epoch=epoch, loss=1, accuracy=0.5, val_loss=1, val_accuracy=accuracy, images_per_s=9, eta_s=0
        )
    if end in ("done", "stopped"):
        writer.done(run, max(val), run / "model.keras", stopped=end == "stopped")
    elif end == "error":
        writer.error("the loss diverged")
    if test is not None:
        (run / "eval").mkdir()
        (run / "eval" / "report.json").write_text(json.dumps({"accuracy": test, "num_examples": 10}))
    return run


def test_each_run_gets_its_settings_accuracies_duration_and_status(tmp_path):
    out = tmp_path / "runs"
    make_run(out, "20260101-000000-lite0-aaaa", end="done", test=0.75)
    make_run(out, "20260101-000001-lite0-bbbb", end="stopped", val=(0.4,))
    make_run(out, "20260101-000002-b0-cccc", end="error", config={"variant": "b0", "data": None, "image_size": 96})
    make_run(out, "20260101-000003-lite0-dddd", end=None)
    live = make_run(out, "20260101-000004-lite0-eeee", end=None)
    (out / "search-20260101").mkdir()  # a scale search is not a run
    (out / "search-20260101" / "search.json").write_text("{}")
    (out / "notes.txt").write_text("not a run")

    with pid_file(live):  # a live process holds the run's lock
        rows = list_runs(out)

    assert [r["status"] for r in rows] == ["done", "stopped", "failed", "incomplete", "running"]
    first = rows[0]
    assert {k: first[k] for k in ("id", "data", "variant", "image_size", "epochs", "fine_tune_epochs")} == {
        "id": "20260101-000000-lite0-aaaa",
        "data": "photos/",
        "variant": "lite0",
        "image_size": 224,  # what the run used (its phase event), not the config's "variant default"
        "epochs": 3,
        "fine_tune_epochs": 2,
    }
    assert (first["unfreeze_blocks"], first["augment"]) == (4, "light")
    assert (first["best_val_accuracy"], first["test_accuracy"]) == (0.8, 0.75)
    assert first["seconds"] is not None and first["seconds"] >= 0
    assert rows[1]["best_val_accuracy"] == 0.4 and rows[1]["test_accuracy"] is None
    assert (rows[2]["variant"], rows[2]["data"]) == ("b0", "(sample)")

    table = format_table(rows).splitlines()
    assert table[0].split() == [
        "run",
        "data",
        "variant",
        "px",
        "ep",
        "ft",
        "blocks",
        "augment",
        "best",
        "val",
        "test",
        "time",
        "status",
    ]
    cells = table[1].split()  # the durations of these hand-made runs are under a minute: one word
    assert cells[1:] == ["photos", "lite0", "224", "3", "2", "4", "light", "0.800", "0.750", cells[10], "done"]
    assert table[2].split()[9] == "-"  # no test accuracy yet


def test_cli_prints_json_and_handles_an_empty_or_missing_folder(tmp_path, capsys):
    make_run(tmp_path / "runs", "r1", end="done", test=0.5)
    assert main(["runs", "--out", str(tmp_path / "runs"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["status"], row["test_accuracy"]) == ("r1", "done", 0.5)

    assert main(["runs", "--out", str(tmp_path / "nothing")]) == 0
    assert "no runs under" in capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    assert main(["runs", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_runs_imports_no_tensorflow(tmp_path):
    make_run(tmp_path / "runs", "r1", end="done")
    code = f"""
import sys
from workbench.cli import main
code = main(["runs", "--out", {str(tmp_path / "runs")!r}])
print("exit", code, "heavy", sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "exit 0 heavy []"
