"""Strategies and resume in fresh processes: two mirrored replicas, two workers, a killed run.

Each case starts Python subprocesses: logical devices and multi-worker collectives must be
configured before TensorFlow initialises, and a SIGKILL needs a process to kill.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_engine_helpers import make_image_folder

from workbench.engine.events import read_events

ROOT = Path(__file__).resolve().parents[1]
# The relative tolerance on per-epoch losses of two replicas against one device: only the
# order of float32 sums differs (each replica averages half of every global batch).
LOSS_RTOL = 1e-3


def _env(**extra) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
    )
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _python(code: str, timeout: float = 300, **env) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


_MIRRORED = """
    import json, sys
    import tensorflow as tf
    replicas = int(sys.argv[1]) if len(sys.argv) > 1 else {replicas}
    if {replicas} > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * {replicas})
    from test_engine_helpers import tiny_config
    from workbench.engine import fine_tune
    from workbench.engine.events import read_events
    config = tiny_config({data!r}, {out!r}, variant="lite0", weights="imagenet", image_size=48,
                         strategy={strategy!r}, batch_size={batch}, epochs=3, fine_tune_epochs=0,
                         recipe={{"cache_features": "off", "dropout": 0.0, "learning_rate": 1e-2,
                                 "warmup_fraction": 0.0, "val_fraction": 0.34}})
    result = fine_tune(config)
    epochs = [e for e in read_events(result.run_dir) if e["type"] == "epoch"]
    phase = [e for e in read_events(result.run_dir) if e["type"] == "phase"][0]
    print(json.dumps({{"losses": [e["loss"] for e in epochs], "replicas": phase["replicas"],
                      "num_train": phase["num_train"],
                      "batch_size": phase["batch_size"], "global_batch_size": phase["global_batch_size"]}}))
"""


@pytest.mark.slow  # ~35 s: one and two replicas trained side by side; the two-worker run stays in the default suite
def test_two_mirrored_replicas_match_one_device(tmp_path):
    # 2 classes x 6 images, a third held out: 8 training images, one global batch per epoch, so
    # both runs see the same batch whatever the shuffle (Keras draws one extra shuffle before a
    # distributed fit starts).
    data = make_image_folder(tmp_path / "data", per_class=6, classes=2)
    two = json.loads(
        _python(
            _MIRRORED.format(replicas=2, data=str(data), out=str(tmp_path / "two"), strategy="mirrored", batch=4)
        ).splitlines()[-1]
    )
    one = json.loads(
        _python(
            _MIRRORED.format(replicas=1, data=str(data), out=str(tmp_path / "one"), strategy="default", batch=8)
        ).splitlines()[-1]
    )
    assert one["num_train"] == two["num_train"] == 8
    assert (two["replicas"], two["batch_size"], two["global_batch_size"]) == (2, 4, 8)
    assert (one["replicas"], one["global_batch_size"]) == (1, 8)
    # Epoch 1 is the loss before any update; epochs 2 and 3 follow updates whose gradients were
    # averaged over both replicas.
    assert two["losses"] == pytest.approx(one["losses"], rel=LOSS_RTOL)
    assert abs(one["losses"][2] - one["losses"][0]) > 0.01  # the runs learned: not a comparison of constants


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_and_only_the_chief_writes(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "runs"
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    command = [
        sys.executable,
        "-m",
        "workbench",
        "train",
        str(data),
        "--variant",
        "phi=-4",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--fine-tune-epochs",
        "1",
        "--strategy",
        "multiworker",
        "--precision",
        "float32",
        "--out",
        str(out),
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0",
        "--quiet",
        "--no-evaluate",
        "--no-export",
    ]
    procs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=420) for p in procs]
    for p, (_stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    assert "run: " in outputs[0][0] and "the chief worker wrote the run" in outputs[1][0]
    (run_dir,) = out.iterdir()  # one run directory: the chief's
    events = read_events(run_dir)
    plan, phase = events[0], next(e for e in events if e["type"] == "phase")
    assert plan["type"] == "plan" and plan["decisions"][0].startswith("recipe_mode = fixed: several workers")
    assert (phase["strategy"], phase["replicas"], phase["global_batch_size"]) == ("CollectiveAllReduceStrategy", 2, 8)
    assert [(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"] == [(1, 1), (2, 1)]
    # training ends with `done`; `workbench train` then calibrates the saved model once, on the chief
    assert [e["type"] for e in events][-2:] == ["done", "calibration"] and (run_dir / "model.keras").exists()
    # a single writer: every event time is in order (two appenders would interleave)
    times = [e["time"] for e in events]
    assert times == sorted(times) and len([e for e in events if e["type"] == "phase"]) == 2


def _train_command(data: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "workbench",
        "train",
        str(data),
        "--variant",
        "phi=-4",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--epochs",
        "3",
        "--fine-tune-epochs",
        "1",
        "--cache-features",
        "off",
        "--run-dir",
        str(run_dir),
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0",
        "--early-stopping-patience",
        "0",
        "--quiet",
        "--no-evaluate",
        "--no-export",
    ]


@pytest.mark.slow  # ~40 s: two workers, one killed, then resumed; the default suite keeps the two-worker run
def test_a_killed_run_resumes_and_accounts_for_every_epoch(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=12)  # 27 train images: 14 steps per epoch
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_command(data, run_dir),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        batches = [e for e in read_events(run_dir) if e["type"] == "batch"]
        if any(e["phase"] == 1 and e["epoch"] == 2 and e["step"] < e["steps"] for e in batches):
            proc.send_signal(signal.SIGKILL)
            killed_at = batches[-1]
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_at is not None, f"the run never reached epoch 2: {proc.stderr.read()[-3000:]}"
    before = read_events(run_dir)
    assert [(e["phase"], e["epoch"]) for e in before if e["type"] == "epoch"] == [(1, 1)]  # killed mid-epoch 2
    assert not [e for e in before if e["type"] in ("done", "error")]

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench",
            "train",
            "--resume",
            str(run_dir),
            "--quiet",
            "--no-evaluate",
            "--no-export",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = read_events(run_dir)
    epochs = [(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"]
    assert epochs == [(1, 1), (1, 2), (1, 3), (2, 1)]  # every epoch exactly once
    restart = [e for e in events if e["type"] == "phase"][1]
    assert restart["phase"] == 1 and restart["resumed"] is True and restart["start_epoch"] == 2
    assert [e["type"] for e in events][-2:] == ["done", "calibration"] and (run_dir / "model.keras").exists()
    assert not (run_dir / "pid").exists()
