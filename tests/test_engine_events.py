"""The events file (one JSON object per line, tolerant reader) and run directories."""

from __future__ import annotations

import json
import math
import os

import pytest

from workbench.engine.events import EventWriter, read_events, summarize, tail_events
from workbench.engine.rundir import (
    atomic_write_text,
    create_run_dir,
    pid_file,
    request_stop,
    running_pid,
    stop_requested,
)


def _batch(**overrides):
    event = dict(phase=1, epoch=1, step=1, steps=4, loss=1.0, accuracy=0.5, images_per_s=10.0, eta_s=3.0)
    event.update(overrides)
    return event


def test_writer_appends_one_json_object_per_line_with_type_and_time(tmp_path):
    seen = []
    writer = EventWriter(tmp_path / "events.jsonl", listeners=[seen.append])
    writer.phase(1, "head", epochs=3)
    writer.batch(**_batch(loss=float("nan")))
    writer.epoch(
        phase=1, epoch=1, loss=0.9, accuracy=0.6, val_loss=0.8, val_accuracy=0.7, images_per_s=100.0, eta_s=2.0
    )
    writer.done(tmp_path, best_val_accuracy=0.7, model_path=tmp_path / "model.keras")
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is strict JSON (NaN written as null)
    assert [e["type"] for e in events] == ["phase", "batch", "epoch", "done"]
    assert all(isinstance(e["time"], float) for e in events)
    assert events[1]["loss"] is None
    assert seen == events


def test_writer_refuses_unknown_types_and_missing_fields(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    with pytest.raises(ValueError, match="unknown event type"):
        writer.emit("progress", x=1)
    with pytest.raises(ValueError, match=r"lacks .*eta_s"):
        writer.batch(phase=1, epoch=1, step=1, steps=2, loss=1.0, accuracy=0.5, images_per_s=1.0)


def test_reader_skips_torn_and_garbled_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.phase(1, "head", epochs=1)
    with open(path, "a") as fh:
        fh.write('not json\n[1, 2]\n{"no_type": 1}\n')
    writer.error("boom")
    with open(path, "a") as fh:
        fh.write('{"type": "batch", "pha')  # a writer killed mid-line
    assert [e["type"] for e in read_events(tmp_path)] == ["phase", "error"]
    assert read_events(tmp_path / "missing") == []


def test_tail_consumes_only_complete_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.phase(1, "head", epochs=1)
    events, offset = tail_events(path)
    assert [e["type"] for e in events] == ["phase"]
    with open(path, "a") as fh:
        fh.write('{"type": "error", "time": 1, "mess')
    events, offset2 = tail_events(path, offset)
    assert events == [] and offset2 == offset
    with open(path, "a") as fh:
        fh.write('age": "x"}\n')
    events, _ = tail_events(path, offset2)
    assert events == [{"type": "error", "time": 1, "message": "x"}]


def test_summarize_reports_status_and_best_accuracy(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    writer.phase(1, "head", epochs=2)
    for epoch, acc in [(1, 0.6), (2, 0.8)]:
        writer.epoch(
            phase=1, epoch=epoch, loss=1.0, accuracy=acc, val_loss=1.0, val_accuracy=acc, images_per_s=1.0, eta_s=0.0
        )
    running = summarize(read_events(tmp_path))
    assert running["status"] == "running" and math.isclose(running["best_val_accuracy"], 0.8)
    writer.error("the loss became nan")
    assert summarize(read_events(tmp_path))["status"] == "error"


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "a: 1\n")
    atomic_write_text(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_run_dirs_are_unique_and_an_existing_run_is_not_overwritten(tmp_path):
    a = create_run_dir(tmp_path, "lite0")
    b = create_run_dir(tmp_path, "lite0")
    assert a != b and a.parent == tmp_path and (a / "checkpoints").is_dir()
    explicit = create_run_dir(tmp_path, "lite0", run_dir=tmp_path / "mine")
    assert explicit == tmp_path / "mine"
    (explicit / "config.yaml").write_text("variant: lite0\n")
    with pytest.raises(ValueError, match="--resume"):
        create_run_dir(tmp_path, "lite0", run_dir=explicit)


def test_pid_file_is_held_while_running_and_removed_after(tmp_path):
    with pid_file(tmp_path):
        assert running_pid(tmp_path) == os.getpid()
    assert not (tmp_path / "pid").exists() and running_pid(tmp_path) is None
    (tmp_path / "pid").write_text("999999999\n")  # a crashed run's stale file
    assert running_pid(tmp_path) is None


def test_stop_file_requests_a_stop(tmp_path):
    assert not stop_requested(tmp_path)
    request_stop(tmp_path)
    assert stop_requested(tmp_path)


def test_progress_printer_draws_phases_and_epochs_from_events():
    import io

    from workbench.engine.progress import ProgressPrinter

    stream = io.StringIO()
    printer = ProgressPrinter(stream, live=True)
    printer(
        {
            "type": "phase",
            "phase": 1,
            "name": "head",
            "epochs": 2,
            "strategy": "default",
            "replicas": 1,
            "batch_size": 32,
            "global_batch_size": 32,
            "precision": "float32",
            "image_size": 160,
            "num_train": 350,
            "num_val": 75,
        }
    )
    printer({"type": "batch", **_batch(step=2, steps=4, loss=0.5, accuracy=0.75, eta_s=65)})
    printer(
        {
            "type": "epoch",
            "phase": 1,
            "epoch": 1,
            "loss": 0.5,
            "accuracy": 0.75,
            "val_loss": 0.4,
            "val_accuracy": 0.8,
            "images_per_s": 100.0,
            "eta_s": 0.0,
        }
    )
    text = stream.getvalue()
    assert "phase 1: head, 2 epochs" in text and "32 global" in text
    assert "epoch 1/2 [" in text and "loss 0.5000 acc 0.7500" in text and "ETA 01:05" in text
    assert "val_acc 0.8000" in text
