"""A run's life on disk: who holds it, how it stops, what a crash leaves behind (issue 11, B3, B5, B6).

* B3: a run is live while its process holds an `flock` on `runs/<id>/pid`; the number in the file is never
  trusted, so a stale file (a crashed run's, or one whose pid now belongs to another program) is taken over.
  The app asks the same question through `apps.jobs`.
* B5: SIGTERM (`docker stop`, Kubernetes) stops after the current batch, like the STOP file, and the run
  resumes; a resume clears the temporaries a killed writer left in `checkpoints/`.
* B6: an event appended after a torn last line starts on a line of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_engine_distributed import ROOT, _env, _train_command
from test_engine_helpers import make_image_folder

from workbench.engine.events import EventWriter, read_events
from workbench.engine.rundir import pid_file, run_is_live, running_pid

NO_AFTERWORK = ("--no-evaluate", "--no-export")


def _sleeper(*extra: str) -> subprocess.Popen:
    """A live process that is not training anything (its pid is what a stale file may hold)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *extra])


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process that holds `run_dir`'s lock, as a training process does, until killed."""
    code = f"""
        import sys, time
        from workbench.engine.rundir import pid_file
        with pid_file({str(run_dir)!r}):
            print("holding", flush=True)
            time.sleep(120)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


# ---------------------------------------------------------------------------------------------- B3: the lock
@pytest.mark.parametrize("who", ["another program", "pid 1"])
def test_a_stale_pid_file_naming_a_live_process_is_taken_over(tmp_path, who):
    # The report: `sleep 300 & echo $! > runs/k2/pid` (or `echo 1 > runs/k2/pid`) blocked the run forever.
    sleeper = _sleeper() if who == "another program" else None
    try:
        number = sleeper.pid if sleeper else 1
        (tmp_path / "pid").write_text(f"{number}\n")
        assert running_pid(tmp_path) is None and not run_is_live(tmp_path)
        with pid_file(tmp_path):
            assert running_pid(tmp_path) == os.getpid()
        assert not (tmp_path / "pid").exists()
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()


def test_a_live_run_is_refused_with_a_message_that_names_the_file_and_how_to_stop_it(tmp_path):
    holder = _holder(tmp_path)
    try:
        assert run_is_live(tmp_path) and running_pid(tmp_path) == holder.pid
        with pytest.raises(ValueError) as refused, pid_file(tmp_path):
            pass
        message = str(refused.value)
        assert str(tmp_path / "pid") in message and f"process {holder.pid}" in message
        assert f"touch {tmp_path / 'STOP'}" in message and f"kill {holder.pid}" in message
        assert f"--resume {tmp_path}" in message
    finally:
        holder.kill()  # SIGKILL: the file stays behind, the lock goes with the process
        holder.wait()
    assert (tmp_path / "pid").read_text().strip() == str(holder.pid)
    assert not run_is_live(tmp_path)
    with pid_file(tmp_path):
        assert running_pid(tmp_path) == os.getpid()


def test_two_starts_at_the_same_moment_give_one_holder(tmp_path):
    # Taking the lock is the check: there is no window between "nobody trains here" and "I train here".
    barrier, release = threading.Barrier(4), threading.Event()
    outcomes: list[str] = []

    def start():
        barrier.wait()
        try:
            with pid_file(tmp_path):
                outcomes.append("holder")
                release.wait(30)
        except ValueError:
            outcomes.append("refused")

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while outcomes.count("refused") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["holder", "refused", "refused", "refused"]


def test_the_app_asks_the_engine_whether_a_run_is_live(tmp_path):
    from apps import jobs

    runs_root = tmp_path / "runs"
    stale, live = runs_root / "stale", runs_root / "live"
    stale.mkdir(parents=True)
    # A recycled pid whose command line even names workbench: the app's old /proc check called it a job.
    impostor = _sleeper("workbench")
    try:
        (stale / "pid").write_text(f"{impostor.pid}\n")
        assert not jobs.is_running(stale) and jobs.live_job(runs_root) is None
        live.mkdir()
        holder = _holder(live)
        try:
            assert jobs.is_running(live) and jobs.live_job(runs_root) == live
        finally:
            holder.kill()
            holder.wait()
        assert jobs.live_job(runs_root) is None
    finally:
        impostor.kill()
        impostor.wait()


# ---------------------------------------------------------------------------------------------- B5: SIGTERM
def test_sigterm_asks_for_a_stop_only_while_installed_and_a_second_one_interrupts(tmp_path):
    from workbench.engine.callbacks import stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm(tmp_path) as termination:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not termination.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert termination.received and (tmp_path / "STOP").exists()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before

    seen = []

    def in_a_thread():
        with stop_on_sigterm(tmp_path / "elsewhere"):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [before]  # signal handlers belong to the main thread: nothing installed there


# ~40 s of a real training subprocess on 2 cores; with the suite near 25 minutes it runs with `pytest -m slow`.
@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=12)  # 27 train images: 14 steps per epoch
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_command(data, run_dir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    signalled = False
    while time.monotonic() < deadline and proc.poll() is None:
        batches = [e for e in read_events(run_dir) if e["type"] == "batch"]
        if any(e["phase"] == 1 and e["epoch"] == 2 and e["step"] < e["steps"] for e in batches):
            proc.send_signal(signal.SIGTERM)
            signalled = True
            break
        time.sleep(0.05)
    _stdout, stderr = proc.communicate(timeout=120)
    assert signalled, f"the run never reached epoch 2: {stderr[-3000:]}"
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and f"--resume {run_dir}" in stderr
    events = read_events(run_dir)
    assert [(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"] == [(1, 1)]  # epoch 2 cut short
    assert events[-1]["type"] == "done" and events[-1]["stopped"] is True
    assert not [e for e in events if e["type"] == "error"]
    assert not (run_dir / "pid").exists()

    # What a SIGKILL in the middle of a save leaves (issue 11, B5), and a pid file naming a live stranger (B3).
    checkpoints = run_dir / "checkpoints"
    leftovers = [checkpoints / ".last-p1e2.weights.x1y2.weights.h5", checkpoints / ".state.k3j4.json"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    stranger = _sleeper()
    (run_dir / "pid").write_text(f"{stranger.pid}\n")
    try:
        resumed = subprocess.run(
            [sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--quiet", *NO_AFTERWORK],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stranger.kill()
        stranger.wait()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = read_events(run_dir)
    assert [(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    # training ends with `done`; `workbench train` then calibrates the saved model (README, "Calibration")
    assert [e["type"] for e in events][-2:] == ["done", "calibration"] and not events[-2]["stopped"]
    assert (run_dir / "model.keras").exists()
    assert not any(path.exists() for path in leftovers)
    assert not (run_dir / "pid").exists() and not (run_dir / "STOP").exists()


# ---------------------------------------------------------------------------------------------- B6: torn lines
def test_an_event_after_a_torn_line_is_not_lost(tmp_path):
    path = tmp_path / "events.jsonl"
    fields = dict(loss=1.0, accuracy=0.5, val_loss=1.0, val_accuracy=0.5, images_per_s=1.0, eta_s=0.0)
    writer = EventWriter(path)
    writer.epoch(phase=1, epoch=1, **fields)
    writer.epoch(phase=1, epoch=2, **fields)
    with open(path, "a") as fh:  # a writer SIGKILLed in the middle of a line
        fh.write('{"type":"batch","time":1,"phase":1,"ep')
    EventWriter(path).phase(phase=1, name="head", epochs=3, resumed=True)
    EventWriter(path).epoch(phase=1, epoch=3, **fields)
    kinds = [(e["type"], e.get("epoch")) for e in read_events(path)]
    assert kinds == [("epoch", 1), ("epoch", 2), ("phase", None), ("epoch", 3)]
    assert path.read_text().count("\n\n") == 0  # a newline is added only after a torn line


@pytest.mark.parametrize(
    "option, message",
    [
        ({"variant": "b0x"}, "unknown variant 'b0x'"),
        ({"weights": "missing.weights.h5"}, "not found"),
        ({"data": "no-such-folder"}, "data folder no-such-folder does not exist"),
    ],
)
def test_a_bad_variant_weights_file_or_data_path_is_refused_before_any_ingest(tmp_path, option, message):
    # B2: a typo was found only after the whole ingest, leaving a run directory behind.
    from workbench.engine.recipe import fine_tune

    data = make_image_folder(tmp_path / "data", per_class=4)
    with pytest.raises(ValueError, match=message):
        fine_tune({"data": str(data), "out": str(tmp_path / "runs"), **option})
    assert not (tmp_path / "runs").exists()


def test_a_run_interrupted_during_ingest_starts_again_and_resume_says_so(tmp_path, monkeypatch):
    # B2: `--resume` and `--run-dir` used to send the user to each other.
    import pipelines
    from workbench.engine.recipe import fine_tune, resume

    data = make_image_folder(tmp_path / "data", per_class=4)
    run_dir = tmp_path / "runs" / "k4"
    config = {"data": str(data), "run_dir": str(run_dir), "variant": "phi=-4", "weights": None}
    config |= {"image_size": 32, "epochs": 1, "fine_tune_epochs": 0}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of ingest

    monkeypatch.setattr(pipelines, "ingest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(config)
    with pytest.raises(ValueError, match=rf"start it again with `workbench train DATA --run-dir {run_dir}`"):
        resume(run_dir)
    monkeypatch.undo()
    result = fine_tune(config)  # the advice works: the same --run-dir is accepted
    assert result.run_dir == run_dir and result.model_path.is_file()


@pytest.mark.slow  # ~30 s: three subprocesses (train, evaluate, resume) from other directories
def test_a_run_made_with_relative_paths_evaluates_and_resumes_from_another_directory(tmp_path):
    # B1: the manifest held the paths as typed ("data1/blue/000.jpg"), so `evaluate` and `--resume` worked only
    # from the directory the run was made in (NotFoundError tracebacks from anywhere else).
    make_image_folder(tmp_path / "data1", per_class=6)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "STOP").write_text("stop after the first batch\n")  # leaves the run resumable
    command = [sys.executable, "-m", "workbench", "train", "data1", "--variant", "phi=-4", "--weights", "none"]
    command += ["--image-size", "32", "--epochs", "2", "--fine-tune-epochs", "1", "--run-dir", "runs/r1", "--quiet"]
    first = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_dir = str(tmp_path / "runs" / "r1")
    workbench = [sys.executable, "-m", "workbench"]
    resumed = subprocess.run(
        [*workbench, "train", "--resume", run_dir, "--quiet", "--no-evaluate", "--no-export"],
        cwd=elsewhere,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    evaluated = subprocess.run(
        [*workbench, "evaluate", run_dir], cwd=elsewhere, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "accuracy" in evaluated.stdout
    done = [e for e in read_events(run_dir) if e["type"] == "done"]
    assert [e["stopped"] for e in done] == [True, False]
