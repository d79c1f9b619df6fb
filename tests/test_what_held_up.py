"""What held up in the hardening report (section E), kept true by tests.

Other parts of section E are specified where they live: refused model files in `test_hostile_models.py`,
SIGKILL and resume in `test_engine_distributed.py`, SIGTERM in `test_run_lifecycle.py`, the app's loopback
binding in `test_app_security.py`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import unicodedata

import numpy as np
import pytest
from test_engine_distributed import ROOT, _env, _train_command
from test_engine_helpers import make_image_folder

from workbench.engine.events import read_events

# Code-point order puts "Zoo lion" before "apple" and "Äpfel" after "zebra": a locale-aware sort would not.
CLASSES = ["zebra", "Äpfel", "Zoo lion", "apple", unicodedata.normalize("NFD", "café"), "日本"]
WINNER = "Äpfel"  # the class the model below always predicts


@pytest.fixture(scope="module")
def unicode_run(tmp_path_factory):
    """A run directory whose model always predicts WINNER, built from folders named CLASSES."""
    import keras
    import yaml
    from PIL import Image

    from pipelines import ingest
    from workbench.models import build_model

    base = tmp_path_factory.mktemp("labels")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (base / "data" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(base / "data" / name / f"{i}.png")
    run_dir = base / "run"
    manifest = ingest(str(base / "data"), workdir=run_dir)
    model = build_model("phi=-8", num_classes=len(manifest.classes), input_shape=(32, 32, 3))
    head = model.get_layer("predictions")
    bias = np.zeros(len(manifest.classes), "float32")
    bias[manifest.classes.index(WINNER)] = 10.0
    head.set_weights([np.zeros_like(head.get_weights()[0]), bias])
    model.save(run_dir / "model.keras")
    (run_dir / "labels.txt").write_text("".join(f"{c}\n" for c in manifest.classes), encoding="utf-8")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"variant": "phi=-8", "image_size": 32, "weights": None}))
    keras.backend.clear_session()
    return run_dir, manifest, base / "data" / CLASSES[0] / "0.png"


@pytest.mark.slow  # ~25 s: four exports of one run
def test_class_order_is_code_point_order_and_every_format_names_the_same_class(unicode_run, tmp_path):
    import tensorflow as tf

    from workbench.serving.export import export
    from workbench.serving.predict import predict

    run_dir, manifest, image = unicode_run
    expected = sorted(unicodedata.normalize("NFC", c) for c in CLASSES)  # NFD folder -> NFC label
    assert manifest.classes == expected
    index = expected.index(WINNER)
    models = {"run": run_dir}
    for fmt in ("savedmodel", "keras", "tflite"):
        models[fmt] = export(run_dir, fmt, out=tmp_path / "exports")
    for fmt, model in models.items():
        folder = model if model.is_dir() else model.parent
        assert (folder / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1] == expected, fmt
        top = predict(model, [str(image)], top_k=1)[0]["predictions"][0]
        assert (top["class"], top["index"]) == (WINNER, index), fmt
    served = tf.saved_model.load(str(models["savedmodel"])).signatures["serving_default"]
    outputs = served(image_bytes=tf.constant([image.read_bytes()]))
    assert outputs["class_name"].numpy()[0].decode("utf-8") == WINNER
    assert int(outputs["class_index"].numpy()[0]) == index


# Slow (about 50 s: two training processes): the default suite keeps the same path through SIGTERM
# (`test_run_lifecycle.py`) and SIGKILL (`test_engine_distributed.py`); `pytest -m slow` runs this one.
@pytest.mark.slow
def test_ctrl_c_stops_training_cleanly_and_the_run_resumes_from_the_last_epoch(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=12)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_command(data, run_dir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline, signalled = time.monotonic() + 300, False
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["type"] == "batch" and e["epoch"] == 2 and e["step"] < e["steps"] for e in read_events(run_dir)):
            proc.send_signal(signal.SIGINT)
            signalled = True
            break
        time.sleep(0.05)
    _stdout, stderr = proc.communicate(timeout=120)
    assert signalled, stderr[-3000:]
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert not (run_dir / "pid").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--quiet", "--no-evaluate"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [(e["phase"], e["epoch"]) for e in read_events(run_dir) if e["type"] == "epoch"]
    assert epochs == [(1, 1), (1, 2), (1, 3), (2, 1)]
