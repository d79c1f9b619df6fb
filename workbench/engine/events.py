"""The run event log, `runs/<id>/events.jsonl`: the single source of truth for its format.

One JSON object per line, appended and flushed as it happens, never rewritten. Every event
has `"type"` and `"time"` (Unix seconds). Types and their fields:

* `plan`: `decisions` (the automatic recipe's choices, one line each: `option = value: why`), `budget_s`,
  `images_per_s` (the measured inference speed it planned with); a second `plan` with `"stage": "fine-tune"` and
  `seconds_left` when phase 2 is planned again as it starts (its lines replace the first plan's phase-2 lines)
* `budget`: `phase`, `epoch`, `message` (the time budget ended this phase after that epoch)
* `phase`: `phase` (1 or 2), `name`, `epochs` (and `start_epoch`, `resumed` when a run resumes)
* `stage`: `phase`, `stage`, `stages`, `first_epoch`, `last_epoch`, `image_size`, `rand_augment_factor`,
  `mixup_alpha`, `dropout` (a progressive-learning stage begins: `workbench.engine.progressive`)
* `batch`: `phase`, `epoch`, `step`, `steps`, `loss`, `accuracy`, `images_per_s`, `eta_s`
* `epoch`: `phase`, `epoch`, `loss`, `accuracy`, `val_loss`, `val_accuracy`, `images_per_s`, `eta_s`
  (and `learning_rate`: the optimizer's rate at the epoch's end)
* `done`: `run_dir`, `best_val_accuracy`, `model_path` (and `stopped` when a STOP file ended it, and
  `warning` when the best validation accuracy is not clearly above chance: `workbench.engine.chance`)
* `error`: `message`
* `trial`: written by hyper-parameter search
* `calibration`: `temperature`, `ece_before`, `ece_after`, `score`, `threshold` (null: no rejection), `accepted`
  (share of validation images over it), and `warning` when a threshold was refused
  (`workbench.evaluation.calibrate`, after training)

`epoch` and `step` count from 1. Writers may add fields; readers ignore what they do not know.
The reader is tolerant: a torn last line (a writer killed mid-write) or a garbled line is
skipped, so the app can tail a live or crashed run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

EVENT_TYPES = (
    "plan",
    "budget",
    "phase",
    "stage",
    "batch",
    "epoch",
    "done",
    "error",
    "trial",
    "calibration",
    "thresholds",
)
EVENTS_FILE = "events.jsonl"

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "plan": ("decisions", "budget_s"),
    "budget": ("phase", "epoch", "message"),
    "phase": ("phase", "name", "epochs"),
    "stage": ("phase", "stage", "stages", "first_epoch", "last_epoch", "image_size"),
    "batch": ("phase", "epoch", "step", "steps", "loss", "accuracy", "images_per_s", "eta_s"),
    "epoch": ("phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "images_per_s", "eta_s"),
    "done": ("run_dir", "best_val_accuracy", "model_path"),
    "error": ("message",),
    "trial": (),
    "calibration": ("temperature", "score", "threshold"),
    "thresholds": ("path", "thresholds"),  # multi-label runs: per-label thresholds tuned on val
}


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / tensor scalars
        return _clean(value.item())
    return value


class Listener(Protocol):
    """What hears a run's events as they are written: any callable taking the event dict, such as a
    function or an object with `__call__` (`workbench.engine.progress.ProgressPrinter`).

    Pass listeners to `fine_tune(config, listeners=[...])`, `resume` or an `EventWriter`. A listener
    sees exactly what `events.jsonl` gets, in order, so a TensorBoard writer, say, is one more
    listener that turns `epoch` events into scalars. A listener runs in the training thread: keep it
    quick, and let it raise only to abort the run.
    """

    def __call__(self, event: dict) -> None: ...


class EventWriter:
    """Appends events to `path`. `listeners` see each event as it is written (see `Listener`)."""

    def __init__(self, path: str | Path, listeners: Iterable[Listener] = ()):
        self.path = Path(path)
        self.listeners = list(listeners)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, type: str, **fields: Any) -> dict:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; known types: {', '.join(EVENT_TYPES)}")
        missing = [f for f in REQUIRED_FIELDS[type] if f not in fields]
        if missing:
            raise ValueError(f"{type} event lacks {', '.join(missing)}")
        event = {"type": type, "time": round(time.time(), 3)}
        event.update({k: _clean(v) for k, v in fields.items()})
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")
        # One write per line on an O_APPEND descriptor, flushed at once: a reader never sees
        # half of a line unless the process dies inside this write.
        with open(self.path, "ab+") as fh:
            if _ends_torn(fh):
                # A writer killed mid-line left it unterminated: end it here, or this event would be
                # glued to the torn one and dropped with it by the reader (issue 11, B6).
                line = b"\n" + line
            fh.write(line)
            fh.flush()
        for listener in self.listeners:
            listener(event)
        return event

    def phase(self, phase: int, name: str, epochs: int, **extra: Any) -> dict:
        return self.emit("phase", phase=phase, name=name, epochs=epochs, **extra)

    def batch(self, **fields: Any) -> dict:
        return self.emit("batch", **fields)

    def epoch(self, **fields: Any) -> dict:
        return self.emit("epoch", **fields)

    def done(
        self, run_dir: str | Path, best_val_accuracy: float | None, model_path: str | Path | None, **extra: Any
    ) -> dict:
        return self.emit(
            "done",
            run_dir=str(run_dir),
            best_val_accuracy=best_val_accuracy,
            model_path=None if model_path is None else str(model_path),
            **extra,
        )

    def error(self, message: str, **extra: Any) -> dict:
        return self.emit("error", message=message, **extra)


@contextmanager
def errors_as_events(writer: EventWriter, expected: tuple[type[BaseException], ...] = (ValueError,)) -> Iterator[None]:
    """A failure inside is also an `error` event (then raised again), so the folder tells why its run or search
    ended: an `expected` one by its message, anything else with its type too."""
    try:
        yield
    except expected as exc:
        writer.error(message=str(exc))
        raise
    except Exception as exc:  # unexpected: still leave a readable trace
        writer.error(message=f"{type(exc).__name__}: {exc}")
        raise


def _ends_torn(fh) -> bool:
    """Whether the file open in `fh` is non-empty and does not end with a newline."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return False
    fh.seek(end - 1)
    return fh.read(1) != b"\n"


def parse_events(text: str) -> list[dict]:
    """Parse JSON lines, skipping blank, torn or garbled lines and objects without a type."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            events.append(event)
    return events


def read_events(run_dir_or_file: str | Path) -> list[dict]:
    """All readable events of a run directory (or an events file); [] when there are none yet."""
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / EVENTS_FILE
    try:
        return parse_events(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


def tail_events(run_dir_or_file: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset`, and the offset to pass next time.

    Only complete lines are consumed: a line still being written is left for the next call.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / EVENTS_FILE
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    complete = chunk[: end + 1]
    return parse_events(complete.decode("utf-8", errors="replace")), offset + len(complete)


def summarize(events: list[dict]) -> dict:
    """Where a run stands, from its events: the last phase/epoch/batch, best val accuracy,
    and `status` in `running | done | error`."""
    status = "running"
    summary: dict[str, Any] = {
        "best_val_accuracy": None,
        "phase": None,
        "epoch": None,
        "batch": None,
        "error": None,
        "done": None,
    }
    for event in events:
        kind = event["type"]
        if kind == "phase":
            summary["phase"] = event
        elif kind == "batch":
            summary["batch"] = event
        elif kind == "epoch":
            summary["epoch"] = event
            acc = event.get("val_accuracy")
            if isinstance(acc, (int, float)) and (
                summary["best_val_accuracy"] is None or acc > summary["best_val_accuracy"]
            ):
                summary["best_val_accuracy"] = acc
        elif kind == "done":
            status, summary["done"] = "done", event
            if event.get("best_val_accuracy") is not None:
                summary["best_val_accuracy"] = event["best_val_accuracy"]
        elif kind == "error":
            status, summary["error"] = "error", event
    summary["status"] = status
    return summary
