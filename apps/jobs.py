"""Training jobs started from the app: one engine subprocess per run directory, found again from disk.

The app never trains in its own script thread. It picks a run id, starts
`python -m workbench train ... --run-dir runs/<id>` as a separate process (the same code path as the
CLI), and from then on knows the job only through files in the run directory:

* `pid`          the engine's process id and its lock (`workbench.engine.rundir.run_is_live`, the one
                 liveness test of the engine and the app); until the child has taken that lock, this
                 server knows its own child by its process handle;
* `events.jsonl` progress, tailed by the Train section;
* `STOP`         written here to ask the engine to stop cleanly after the current batch.

Because every fact lives on disk, a browser refresh or a second tab finds the running job again, and
a lock file around "is a job running? → start one" makes sure nothing is started twice.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.engine.rundir import PID_FILE, new_run_id, request_stop, run_is_live, stop_requested

__all__ = [
    "Job",
    "JobAlreadyRunning",
    "is_running",
    "launch",
    "live_job",
    "log_tail",
    "new_run_id",
    "request_stop",
    "stop_requested",
    "train_command",
]

# The project root (parent of apps/): the child gets it on PYTHONPATH so `python -m workbench` works
# from a source checkout as well as from an installed package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

LOG_FILE = "train.log"
_LOCK_FILE = ".launch.lock"

# The children this server started, by resolved run directory. A child takes the run's lock only once
# Python and the engine have started (seconds); until then its handle is how this server knows it is
# alive. Polling a handle also reaps a finished child, which would otherwise linger as a zombie.
_CHILDREN: dict[Path, subprocess.Popen] = {}


class JobAlreadyRunning(RuntimeError):
    """Raised when a start is asked for while another training job is alive."""

    def __init__(self, run_dir: Path):
        super().__init__(
            f"a training job is already running in {run_dir}; stop it or wait for it to finish before starting another"
        )
        self.run_dir = run_dir


@dataclass(frozen=True)
class Job:
    """A started training job: its run directory and process id."""

    run_dir: Path
    pid: int


def child_env() -> dict[str, str]:
    """The environment of a child process: this one's, with the project importable and TF quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _child_running(run_dir: Path) -> bool:
    """Whether a child this server started for `run_dir` is still running (finished ones are reaped)."""
    key = Path(run_dir).resolve()
    child = _CHILDREN.get(key)
    if child is None:
        return False
    if child.poll() is not None:
        _CHILDREN.pop(key, None)
        return False
    return True


def is_running(run_dir: Path) -> bool:
    """Whether a job is training in `run_dir`: the engine holds the run's lock, or this server's child
    for it is still starting up."""
    return run_is_live(run_dir) or _child_running(run_dir)


def live_job(runs_root: Path) -> Path | None:
    """The run directory of a live training job under `runs_root`, or None."""
    root = Path(runs_root)
    if not root.is_dir():
        return None
    candidates = {p.parent for p in root.glob(f"*/{PID_FILE}")}
    candidates |= {root / key.name for key in list(_CHILDREN) if key.parent == root.resolve()}
    for run_dir in sorted(candidates, reverse=True):
        if is_running(run_dir):
            return run_dir
    return None


@contextmanager
def _launch_lock(runs_root: Path):
    runs_root.mkdir(parents=True, exist_ok=True)
    with open(runs_root / _LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_command(data: str | None, run_dir: Path, options: list[str]) -> list[str]:
    """The argv that trains into `run_dir`: exactly what a user would type after `workbench train`."""
    argv = [sys.executable, "-m", "workbench", "train"]
    if data:
        argv.append(str(data))
    return [*argv, "--run-dir", str(run_dir), *options]


def launch(argv: list[str], run_dir: Path, runs_root: Path) -> Job:
    """Start `argv` as a detached training process writing into `run_dir`.

    Raises `JobAlreadyRunning` if any job under `runs_root` is alive; the check and the start happen
    under one file lock, so two tabs pressing Start at once still start one job.
    """
    run_dir = Path(run_dir)
    runs_root = Path(runs_root)
    with _launch_lock(runs_root):
        running = live_job(runs_root)
        if running is not None:
            raise JobAlreadyRunning(running)
        run_dir.mkdir(parents=True, exist_ok=True)
        env = child_env()
        with open(run_dir / LOG_FILE, "ab") as log:
            # A new session: the job outlives a closed tab and is not hit by Ctrl-C meant for the server.
            child = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        # Recorded before the lock is released, so a second tab sees the job at once, even before the
        # engine has started up and locked `pid`. (The app never writes `pid` itself: replacing the file
        # would take it from under the engine's lock.)
        _CHILDREN[run_dir.resolve()] = child
    return Job(run_dir=run_dir, pid=child.pid)


def log_tail(run_dir: Path, lines: int = 30) -> str:
    """The last `lines` lines the job printed (its stdout and stderr), for when it died unexpectedly."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
