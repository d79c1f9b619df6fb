"""Run directories: naming, layout, the pid file and the STOP file.

```
runs/<run-id>/
  config.yaml      the RunConfig
  manifest.json    the dataset manifest (pipelines.Manifest)
  labels.txt       one class name per line, in label-index order
  events.jsonl     progress events (workbench.engine.events)
  checkpoints/     best.weights.h5, last.weights.h5, last.optimizer.npz, state.json, features.npz
  model.keras      the best model
  pid              while a process trains in it: its id, and the lock it holds (see run_is_live)
  STOP             written by a user or the app: stop after the current batch
```
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import secrets
import time
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
        if run_is_live(path):  # advice that works: a live run cannot be resumed, only stopped or waited for
            raise ValueError(f"run directory {path} is being trained now: {_busy_message(path)}")
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
    """Whether a process with this id exists. Not a test of whether a run is live: pids are reused
    (after a reboot or in a new container), so ask `run_is_live` / `running_pid` for that."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# How long `pid_file` keeps trying a busy lock before refusing. A liveness probe (`run_is_live`, which
# the app calls on every rerun) holds a shared lock for microseconds; the retries keep such a probe from
# being mistaken for a live run.
LOCK_WAIT_S = 1.0


def run_is_live(run_dir: str | Path) -> bool:
    """Whether a process is training in `run_dir` right now: the one liveness test of the engine and the app.

    A training process holds an exclusive `flock` on `run_dir/pid` for its whole life, and the kernel
    drops the lock when the process ends however it ends (SIGKILL, OOM, reboot). The number in the file
    is never trusted on its own: it may be stale or belong to another program by now (issue 11, B3).
    """
    try:
        fd = os.open(Path(run_dir) / PID_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _recorded_pid(run_dir: str | Path) -> int | None:
    try:
        return int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(run_dir: str | Path) -> int | None:
    """The pid of the process training in `run_dir`, or None when none is (a stale file is ignored).

    0 in the instant between a process taking the lock and writing its number.
    """
    if not run_is_live(run_dir):
        return None
    return _recorded_pid(run_dir) or 0


def _busy_message(run_dir: Path) -> str:
    pid = running_pid(run_dir)
    who = f"process {pid}" if pid else "another process"
    kill = f"`kill {pid}`" if pid else "SIGTERM"
    return (
        f"run {run_dir} is being trained right now by {who}, which holds the lock on {run_dir / PID_FILE}. "
        f"Wait for it to finish, or stop it cleanly after its current batch (`touch {run_dir / STOP_FILE}` or "
        f"{kill}) and then resume it with `workbench train --resume {run_dir}`"
    )


def _lock_pid_file(run_dir: Path) -> int:
    """Open `run_dir/pid`, lock it exclusively, write this process's id in it; return the descriptor."""
    path = run_dir / PID_FILE
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise ValueError(_busy_message(run_dir)) from None
            time.sleep(0.05)
            continue
        # The holder before us unlinks the file as it exits: a lock on that unlinked inode guards
        # nothing, so try again on the file that is at the path now.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or not os.path.samestat(current, os.fstat(fd)):
            os.close(fd)
            continue
        # Written in place, never by rename: a new inode would not carry the lock.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


@contextmanager
def pid_file(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock (`run_dir/pid`, locked and holding this pid) while training.

    Raises ValueError naming the file when a live process holds it. A file left by a process that
    died (stale, whatever number it holds) is simply taken over. Taking the lock is the check, so
    two processes starting at once cannot both train.
    """
    run_dir = Path(run_dir)
    fd = _lock_pid_file(run_dir)
    try:
        yield
    finally:
        # Unlinked before the lock is released, so nobody sees an unlocked file of a live run; and
        # only when it is still this run's file (not one a later process made after a manual delete).
        with suppress(FileNotFoundError):
            path = run_dir / PID_FILE
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                path.unlink()
        os.close(fd)


def stop_requested(run_dir: Path) -> bool:
    return (run_dir / STOP_FILE).exists()


def request_stop(run_dir: str | Path) -> None:
    """Ask a running training to stop cleanly after its current batch."""
    atomic_write_text(Path(run_dir) / STOP_FILE, "stop requested\n")
