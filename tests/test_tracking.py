"""Experiment tracking (issue 12): TensorBoard files written from the run's own events."""

from __future__ import annotations

import io

import numpy as np
from helpers_tiny_run import evaluated, tiny_run
from test_engine_helpers import make_image_folder, tiny_config

from workbench.engine.events import read_events
from workbench.engine.tensorboard import EPOCH_SCALARS, TensorBoardListener, read_images, read_scalars


def test_every_run_writes_tensorboard_scalars_that_match_its_events(tmp_path):
    from workbench.engine import fine_tune

    data = make_image_folder(tmp_path / "data", per_class=8)
    result = fine_tune(tiny_config(data, tmp_path / "runs", epochs=2, fine_tune_epochs=1))
    events = read_events(result.run_dir)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [(e["phase"], e["epoch"]) for e in epochs] == [(1, 1), (1, 2), (2, 1)]
    # The optimizer's rate at each epoch's end is part of the epoch event: the cosine reaches 0 as a phase ends.
    assert 0 < epochs[0]["learning_rate"] < 1e-2 and epochs[1]["learning_rate"] == epochs[2]["learning_rate"] == 0

    scalars = read_scalars(result.run_dir)
    steps = [1, 2, 3]  # phase 2's first epoch follows phase 1's two
    for field, tag in EPOCH_SCALARS.items():
        assert [s for s, _ in scalars[tag]] == steps, tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [e[field] for e in epochs], rtol=1e-6)
    throughput = {
        "images_per_s/phase1": [(1, epochs[0]["images_per_s"]), (2, epochs[1]["images_per_s"])],
        "images_per_s/phase2": [(3, epochs[2]["images_per_s"])],
        "images_per_s/features": [(0, e["images_per_s"]) for e in events if _ends_feature_pass(e)],
    }
    assert len(throughput["images_per_s/features"]) == 1  # phase 1 ran on cached features
    for tag, expected in throughput.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in expected], tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in expected], rtol=1e-6)


def test_a_run_at_chance_ends_with_a_warning_in_its_done_event(tmp_path, capsys):
    """Issue 12: 6 validation images of 3 classes after one epoch from random init: the CLI warns, and the
    done event records the same words (whatever the run scored, the rule decides)."""
    from pipelines import Manifest
    from workbench.cli import main
    from workbench.engine.chance import train_warning

    data = make_image_folder(tmp_path / "data", per_class=6)
    argv = ["train", str(data), "--variant", "phi=-4", "--weights", "none", "--image-size", "32", "--epochs", "1"]
    argv += ["--fine-tune-epochs", "0", "--learning-rate", "1e-6", "--out", str(tmp_path / "runs")]
    assert (
        main([*argv, "--val-fraction", "0.34", "--test-fraction", "0", "--quiet", "--no-evaluate", "--no-export"]) == 0
    )
    (run,) = (tmp_path / "runs").iterdir()
    done = next(e for e in reversed(read_events(run)) if e["type"] == "done")  # calibration follows it
    manifest = Manifest.load(run / "manifest.json")
    expected = train_warning(
        done["best_val_accuracy"],
        list(manifest.class_counts("val").values()),
        train_counts=list(manifest.class_counts("train").values()),
        epochs=1,
        fine_tune_epochs=0,
        image_size=32,
        learning_rate=1e-6,
    )
    assert expected is not None  # a head trained at 1e-6 for one epoch is still guessing
    assert done["warning"] == expected
    assert f"warning: {expected}" in capsys.readouterr().err


def _ends_feature_pass(event: dict) -> bool:
    return event.get("stage") == "features" and event["step"] == event["steps"]


def test_resumed_phase_two_keeps_its_run_wide_step():
    """A resumed run does not announce its finished phase 1 again: the planned epochs place phase 2."""
    listener = TensorBoardListener("unused", {1: 5, 2: 3})
    assert listener.step(1, 1) == 1 and listener.step(2, 1) == 6
    learning = TensorBoardListener("unused")
    learning({"type": "phase", "phase": 1, "epochs": 4})
    learning({"type": "phase", "phase": 2, "epochs": 2})
    assert learning.step(2, 2) == 6


def test_evaluation_adds_the_confusion_matrix_image(tmp_path_factory):
    from PIL import Image

    run = tiny_run(tmp_path_factory)
    report = evaluated(tmp_path_factory)
    assert report["files"]["tensorboard"] == str(run / "tb")
    ((step, png),) = read_images(run)["eval/confusion_matrix"]
    assert step == 0  # the tiny run was trained without the engine: no epoch events
    with Image.open(io.BytesIO(png)) as image, Image.open(report["files"]["confusion_matrix"]) as saved:
        assert image.size == saved.size and image.format == "PNG"
