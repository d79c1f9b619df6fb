"""The Streamlit app, driven headlessly with AppTest (`streamlit.testing.v1`).

Each test runs the real app in a temporary working directory, so its `runs/` and `saved_models/`
start empty. Training happens in a real `workbench train` subprocess, as it does for a user.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "apps" / "workbench_app.py")
SECTIONS = ("Data", "Model", "Train", "Evaluate", "Export", "Compare", "Search")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty folder to run the app in; background measurements are stopped afterwards."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    from apps import background

    background.stop_all()


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=120)


def goto(at, section: str):
    at.sidebar.radio(key="section").set_value(section).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def png_bytes(colour, size: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload(at, name: str, data: bytes):
    at.radio(key="data_source").set_value("Upload a zip").run()
    at.file_uploader(key="data_upload").set_value((name, data, "application/zip")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---------------------------------------------------------------------------------------------- sections
@pytest.mark.parametrize("section", SECTIONS)
def test_each_section_renders_without_exceptions(workspace, section):
    at = new_app()
    at.run()
    goto(at, section)
    headers = [h.value for h in at.header]
    assert any(section in h for h in headers), headers


def test_model_section_offers_saved_scaling_families(workspace, monkeypatch):
    from workbench.models import ScalingFamily
    from workbench.models.families import save_family

    monkeypatch.setenv("WORKBENCH_FAMILIES", str(workspace / "families"))
    save_family(ScalingFamily(name="mydata", alpha=1.0, beta=1.1, gamma=1.3))
    at = goto(new_app().run(), "Model")
    at.selectbox(key="model_variant").set_value("custom φ").run()
    family = at.selectbox(key="model_family")
    assert (
        family.options[0].startswith("efficientnet (paper")
        and "mydata (scale search: α=1, β=1.1, γ=1.3)" in family.options
    )
    family.set_value("mydata").run()
    at.slider(key="model_phi").set_value(1.0).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["variant"] == "mydata:phi=1"


def test_data_section_shows_the_ingest_report_of_the_embedded_sample(workspace):
    at = new_app()
    at.run()
    at.button(key="data_use_sample").click().run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "5"
    assert int(metrics["Train"]) > int(metrics["Validation"]) > 0 and int(metrics["Test"]) > 0
    assert metrics["Quarantined"] == "0"
    assert len(at.get("vega_lite_chart")) == 1  # class counts
    assert len(at.image) == 5 * 6  # the sample grid: six images per class


def test_an_upload_with_a_bad_file_and_imbalance_is_reported_not_refused(workspace):
    members = {f"cats/{i}.png": png_bytes((200, 50, 50), seed=i) for i in range(12)}
    members |= {f"dogs/{i}.png": png_bytes((50, 50, 200), seed=i) for i in range(3)}
    members["dogs/broken.png"] = b"not an image at all"
    at = upload(new_app().run(), "pets.zip", zip_bytes(members))
    assert not at.error
    assert {m.label: m.value for m in at.metric}["Quarantined"] == "1"
    warnings = " ".join(w.value for w in at.warning)
    assert "imbalanced" in warnings and "quarantined" in warnings
    quarantine = at.dataframe[0].value
    assert list(quarantine["path"].map(lambda p: Path(p).name)) == ["broken.png"]


# ---------------------------------------------------------------------------------------------- bad input
BAD_UPLOADS = {
    "not a zip": (b"this is plain text, not an archive", "zip"),
    "traversal member": (
        zip_bytes(
            {
                "cats/a.png": png_bytes((200, 0, 0)),
                "dogs/b.png": png_bytes((0, 0, 200)),
                "../../escape.png": png_bytes((0, 200, 0)),
            }
        ),
        "escape.png",
    ),
    "single class": (zip_bytes({f"cats/{i}.png": png_bytes((200, 0, 0), seed=i) for i in range(4)}), "class"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_show_an_error_element_not_a_traceback(workspace, case):
    data, expected = BAD_UPLOADS[case]
    at = upload(new_app().run(), "upload.zip", data)
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "upload.zip" in message and expected in message
    assert not at.metric  # no report is drawn for unusable data
    assert not (workspace / "escape.png").exists() and not (workspace.parent / "escape.png").exists()


def test_a_missing_local_folder_is_an_error_message(workspace):
    at = new_app().run()
    at.radio(key="data_source").set_value("Local folder or zip").run()
    at.text_input(key="data_folder").input(str(workspace / "no-such-folder"))
    submit = next(b for b in at.button if b.label == "Load folder")
    submit.click().run()
    assert not at.exception
    assert len(at.error) == 1 and "no-such-folder" in at.error[0].value


# ---------------------------------------------------------------------------------------------- the main path
def wait_for(at, predicate, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if predicate(at):
            return at
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s; errors: {[e.value for e in at.error]}")


def epoch_events(run_dir: Path) -> list[dict]:
    from workbench.engine.events import read_events

    return [e for e in read_events(run_dir) if e["type"] == "epoch"]


def test_sample_dataset_trains_a_tiny_model_stops_on_request_and_shows_a_confusion_matrix(workspace):
    from apps import background

    at = new_app()
    at.run()
    at.button(key="data_use_sample").click().run()

    goto(at, "Model")
    at.selectbox(key="model_variant").set_value("custom φ").run()
    at.slider(key="model_phi").set_value(-4.0).run()
    at.number_input(key="model_size_phi=-4").set_value(48).run()
    assert "trains from scratch" in " ".join(c.value for c in at.caption)
    background.stop_all()  # the family table is not what this test is about: leave the CPU to training

    # Far more epochs than the test waits for, and no early stopping: only the Stop button ends it early.
    goto(at, "Train")
    at.number_input(key="train_opt_epochs").set_value(200)
    at.number_input(key="train_opt_fine_tune_epochs").set_value(1)
    at.number_input(key="train_opt_recipe.early_stopping_patience").set_value(0)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error

    run_dirs = [p for p in (workspace / "runs").iterdir() if not p.name.startswith(".")]
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert "in progress" in at.info[0].value

    # A second tab (a new session, like a browser refresh) attaches to the same job and cannot start another.
    other = new_app()
    other.run()
    goto(other, "Train")
    assert run_dir.name in other.info[0].value
    assert not [b for b in other.button if b.label == "Start training"]

    # Wait for what is asserted: a page that draws the progress bar and both curves (loss, accuracy), and a
    # finished epoch, so that stopping still leaves a checkpoint. Events on disk alone would not do: the page
    # may have been drawn before they were written.
    def live_page_with_an_epoch(a) -> bool:
        drawn = len(a.get("progress")) == 1 and len(a.get("vega_lite_chart")) == 2
        return a.error or (drawn and bool(epoch_events(run_dir)))

    wait_for(at, live_page_with_an_epoch, timeout=180, every=1.0)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("progress")) == 1 and len(at.get("vega_lite_chart")) == 2  # progress, loss and accuracy
    at.button(key="train_stop").click().run()
    assert (run_dir / "STOP").is_file()

    wait_for(at, lambda a: a.success or a.error, timeout=180)
    assert not at.error, [e.value for e in at.error]
    assert "Stopped on request" in at.success[0].value
    plan = [e.label for e in at.expander if e.label.startswith("Automatic recipe")]
    assert plan, "the automatic recipe's choices are shown with the run"
    assert 1 <= len(epoch_events(run_dir)) < 200
    assert (run_dir / "model.keras").is_file()
    assert [p for p in (workspace / "runs").iterdir() if not p.name.startswith(".")] == [run_dir]
    config = (run_dir / "config.yaml").read_text().splitlines()
    assert {"variant: phi=-4", "image_size: 48", "weights: null", "epochs: 200"} <= {line.strip() for line in config}

    goto(at, "Evaluate")
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    matrix = [c for c in charts if "true class" in json.dumps(c)]
    assert len(matrix) == 1
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["split"] == "test" and len(report["confusion_matrix"]) == 5
    labels = {m.label: m.value for m in at.metric}
    assert labels["Accuracy"] == f"{report['accuracy']:.1%}"
    # Calibration: the temperature fitted on validation, ECE, and the reliability diagram of this split
    assert labels["Temperature"] == f"{report['calibration']['temperature']:.3g}"
    assert labels["ECE after"] == f"{report['calibration']['ece_after']:.3f}"
    assert sum("mean confidence in bin" in json.dumps(c) for c in charts) == 1
    assert len(at.image) >= 2  # Grad-CAM: the image and its overlay
    # A confusion-matrix cell opens its images; a choice per image makes a dataset version (links, never moves)
    t, p = np.unravel_index(np.argmax(report["confusion_matrix"]), (5, 5))
    at.selectbox(key="eval_cell_true").set_value(report["classes"][t]).run()
    at.selectbox(key="eval_cell_predicted").set_value(report["classes"][p]).run()
    actions = [s for s in at.selectbox if str(s.key).startswith("eval_cell_action_")]
    assert len(actions) == min(report["confusion_matrix"][t][p], 48)
    actions[0].set_value("drop").run()
    at.button(key="eval_cell_apply").click().run()
    assert any("Dataset version" in m.value and "1 dropped" in m.value for m in at.success), [
        m.value for m in at.success
    ]
    assert len(list((run_dir / "eval" / "reviews").glob("*/version/dataset.json"))) == 1
    # Try it answers as `workbench predict RUN` does: calibrated, and "unknown" below a rejection threshold
    at.file_uploader(key="eval_try").set_value(("mine.png", png_bytes((200, 30, 30)), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    answers = [m.value for m in [*at.success, *at.warning] if m.value.startswith("Prediction:")]
    assert len(answers) == 1, answers


# ---------------------------------------------------------------------------------------------- helpers
def test_train_flags_round_trip_through_the_train_command_parser():
    import argparse

    from apps.train_section import config_flags
    from workbench.commands import train as train_command
    from workbench.engine.config import RunConfig, with_overrides

    config = with_overrides(
        RunConfig(),
        {
            "variant": "phi=-4",
            "weights": None,
            "image_size": 48,
            "epochs": 2,
            "recipe.learning_rate": 0.02,
        },
    )
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(config_flags(config))
    overrides = {path: getattr(args, path) for path in vars(args) if "." in path or path in config.to_dict()}
    assert with_overrides(RunConfig(), overrides) == config


def test_the_reliability_diagram_plots_the_non_empty_bins_before_and_after_scaling():
    from apps.evaluate_section import reliability_frame

    def bins(*rows):
        return [{"count": n, "confidence": c, "accuracy": a} for n, c, a in rows]

    report = {
        "calibration": {
            "reliability_before": bins((0, None, None), (4, 0.9, 0.5)),
            "reliability_after": bins((3, 0.6, 0.66), (1, 0.95, 1.0)),
        }
    }
    frame = reliability_frame(report)
    assert frame.to_dict("records") == [
        {"when": "before", "confidence": 0.9, "accuracy": 0.5, "images": 4},
        {"when": "after", "confidence": 0.6, "accuracy": 0.66, "images": 3},
        {"when": "after", "confidence": 0.95, "accuracy": 1.0, "images": 1},
    ]
    assert reliability_frame({}).empty  # a report from before calibration existed draws nothing


def test_progress_counts_finished_epochs_and_the_current_one():
    from apps.train_section import progress_fraction

    config = {"epochs": 2, "fine_tune_epochs": 2}
    events = [
        {"type": "phase", "phase": 1, "name": "head", "epochs": 2},
        {"type": "epoch", "phase": 1, "epoch": 1},
        {"type": "epoch", "phase": 1, "epoch": 2},
        {"type": "phase", "phase": 2, "name": "fine-tune", "epochs": 2},
        {"type": "batch", "phase": 2, "epoch": 1, "step": 5, "steps": 10},
    ]
    assert progress_fraction(config, events) == pytest.approx(2.5 / 4)
    assert progress_fraction(config, events[:1]) == 0.0


def test_a_second_launch_while_a_job_lives_is_refused_and_stop_writes_the_stop_file(tmp_path):
    from apps import jobs

    runs_root = tmp_path / "runs"
    # Any process whose command line names workbench counts as a job; this one only sleeps.
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "workbench"]
    job = jobs.launch(sleeper, runs_root / "first", runs_root)
    try:
        assert jobs.live_job(runs_root) == runs_root / "first"
        with pytest.raises(jobs.JobAlreadyRunning, match="first"):
            jobs.launch(sleeper, runs_root / "second", runs_root)
        assert not (runs_root / "second").exists()
        jobs.request_stop(job.run_dir)
        assert jobs.stop_requested(job.run_dir)
    finally:
        import os
        import signal

        os.kill(job.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while jobs.live_job(runs_root) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.live_job(runs_root) is None  # the ended (and reaped) process is not a live job
