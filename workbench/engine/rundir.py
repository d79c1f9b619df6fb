"""Run directories: naming, layout, the pid file and the STOP file.

```
runs/<run-id>/
  config.yaml      the RunConfig
  manifest.json    the dataset manifest (pipelines.Manifest)
  labels.txt       one class name per line, in label-index order
  events.jsonl     progress events (workbench.engine.events)
  checkpoints/     best.weights.h5, last.weights.h5, last.optimizer.npz, state.json, features.npz
  model.keras      the best model
  pid              while a process trains in it
  STOP             written by a user or the app: stop after the current batch
```
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

# Atomic writes are `pipelines.files`'s (one helper for the project); the names stay importable from
# here for older callers (`x as x` marks a re-export).
from pipelines.files import atomic_path as atomic_path
from pipelines.files import atomic_write_json as atomic_write_json
from pipelines.files import atomic_write_text as atomic_write_text

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.keras"
CHECKPOINTS_DIR = "checkpoints"
PID_FILE = "pid"
STOP_FILE = "STOP"
STATE_FILE = "state.json"


def new_run_id(variant: str) -> str:
    """`20260127-231500-lite0-a1b2`: sorts by start time, readable, unique without a lock."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe_variant = "".join(c if c.isalnum() else "_" for c in variant)
    return f"{stamp}-{safe_variant}-{secrets.token_hex(2)}"


def create_run_dir(out: str | Path, variant: str, run_dir: str | Path | None = None) -> Path:
    """Make the run directory (an explicit `run_dir`, or a fresh id under `out`)."""
    path = Path(run_dir) if run_dir else Path(out) / new_run_id(variant)
    if path.exists() and not path.is_dir():
        raise ValueError(f"run directory {path} exists and is not a directory; pick another --run-dir")
    if (path / CONFIG_FILE).exists():
        raise ValueError(
            f"run directory {path} already holds a run; resume it with `workbench train --resume "
            f"{path}` or pick a new --run-dir"
        )
    (path / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
    return path


def write_labels(run_dir: Path, classes: list[str]) -> None:
    atomic_write_text(run_dir / LABELS_FILE, "".join(f"{c}\n" for c in classes))


def read_labels(run_dir: str | Path) -> list[str]:
    return [line for line in (Path(run_dir) / LABELS_FILE).read_text(encoding="utf-8").splitlines() if line]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (tells a crashed run from a running one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(run_dir: str | Path) -> int | None:
    """The pid of the process training in `run_dir`, or None when none is (a stale file is ignored)."""
    try:
        pid = int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


@contextmanager
def pid_file(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/pid` while training; refuse when another live process holds it."""
    other = running_pid(run_dir)
    if other is not None and other != os.getpid():
        raise ValueError(
            f"run {run_dir} is already being trained by process {other}; stop it first "
            f"(touch {run_dir / STOP_FILE}) or wait for it"
        )
    atomic_write_text(run_dir / PID_FILE, f"{os.getpid()}\n")
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            (run_dir / PID_FILE).unlink()


def stop_requested(run_dir: Path) -> bool:
    return (run_dir / STOP_FILE).exists()


def request_stop(run_dir: str | Path) -> None:
    """Ask a running training to stop cleanly after its current batch."""
    atomic_write_text(Path(run_dir) / STOP_FILE, "stop requested\n")
