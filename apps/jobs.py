"""Training jobs started from the app: one engine subprocess per run directory, found again from disk.

The app never trains in its own script thread. It picks a run id, starts
`python -m workbench train ... --run-dir runs/<id>` as a separate process (the same code path as the
CLI), and from then on knows the job only through files in the run directory:

* `pid`          the process id (written here right after the start, and by the engine itself);
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

from workbench.engine.rundir import PID_FILE, atomic_write_text, new_run_id, request_stop, stop_requested

__all__ = [
    "Job",
    "JobAlreadyRunning",
    "is_running",
    "launch",
    "live_job",
    "log_tail",
    "new_run_id",
    "pid_alive",
    "read_pid",
    "request_stop",
    "stop_requested",
    "train_command",
]

# The project root (parent of apps/): the child gets it on PYTHONPATH so `python -m workbench` works
# from a source checkout as well as from an installed package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

LOG_FILE = "train.log"
_LOCK_FILE = ".launch.lock"

# Popen handles of the children this server started: polling them reaps finished processes, which
# would otherwise linger as zombies that still answer `kill(pid, 0)`.
_CHILDREN: dict[int, subprocess.Popen] = {}


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


def read_pid(run_dir: Path) -> int | None:
    """The pid recorded in `run_dir/pid`, or None when absent or unreadable."""
    try:
        return int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` is a running (not zombie) workbench process.

    Checking the command line guards against pid reuse after a reboot or a long pause: a recycled
    pid that now belongs to some other program does not count as our job.
    """
    if not pid or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    proc = Path("/proc") / str(pid)
    if proc.exists():  # Linux: rule out zombies and recycled pids
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return False
        return b"workbench" in cmdline
    return True


def is_running(run_dir: Path) -> bool:
    """Whether the job writing into `run_dir` is alive."""
    return pid_alive(read_pid(run_dir))


def live_job(runs_root: Path) -> Path | None:
    """The run directory of a live training job under `runs_root`, or None."""
    root = Path(runs_root)
    if not root.is_dir():
        return None
    for pid_file in sorted(root.glob(f"*/{PID_FILE}"), reverse=True):
        if pid_alive(read_pid(pid_file.parent)):
            return pid_file.parent
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
        _CHILDREN[child.pid] = child
        # Written before the lock is released, so a second tab sees the job at once, even before the
        # engine has started up and written the same pid itself.
        atomic_write_text(run_dir / PID_FILE, f"{child.pid}\n")
    return Job(run_dir=run_dir, pid=child.pid)


def log_tail(run_dir: Path, lines: int = 30) -> str:
    """The last `lines` lines the job printed (its stdout and stderr), for when it died unexpectedly."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
