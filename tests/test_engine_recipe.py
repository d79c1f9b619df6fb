"""The two-phase recipe end to end: run directory, learning, phase-2 surgery, STOP, NaN, class weights, CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_engine_helpers import make_image_folder, tiny_config

from workbench.engine import RunConfig, TrainingError, fine_tune
from workbench.engine.config import fixed_value, unset_paths, with_overrides, with_recipe_defaults
from workbench.engine.events import REQUIRED_FIELDS, read_events
from workbench.engine.recipe import class_weights


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    """One real fine-tune of ImageNet Lite0 (64 px, 3 colour classes) shared by the tests below."""
    root = tmp_path_factory.mktemp("lite0")
    data = make_image_folder(root / "data")
    config = tiny_config(
        data,
        root / "runs",
        variant="lite0",
        weights="imagenet",
        image_size=64,
        epochs=3,
        fine_tune_epochs=1,
        recipe={"fine_tune_learning_rate": 1e-4},
    )
    result = fine_tune(config)
    keras.mixed_precision.set_global_policy("float32")
    return config, result


def test_run_directory_holds_the_whole_run(lite0_run):
    config, result = lite0_run
    run = result.run_dir
    assert {"config.yaml", "manifest.json", "labels.txt", "events.jsonl", "checkpoints", "model.keras"} <= {
        p.name for p in run.iterdir()
    }
    assert not (run / "pid").exists()  # held only while training
    saved, given = RunConfig.load(run / "config.yaml"), RunConfig.from_dict(config)
    assert not unset_paths(saved)  # the recipe's choices are recorded: a resume trains the same recipe
    chosen = {line.split(" = ", 1)[0]: None for line in saved.auto_decisions}  # what the automatic recipe chose
    assert with_overrides(saved, {**chosen, "auto_decisions": None}) == given  # and nothing the user set changed
    from pipelines import Manifest

    manifest = Manifest.load(run / "manifest.json")
    assert (run / "labels.txt").read_text().splitlines() == manifest.classes == ["class0", "class1", "class2"]
    assert not [p for p in run.rglob(".*") if p.is_file()]  # atomic writes left no temporaries


def test_events_tell_the_story_of_both_phases(lite0_run):
    _, result = lite0_run
    events = read_events(result.run_dir)
    for event in events:
        assert set(REQUIRED_FIELDS[event["type"]]) <= set(event), event
    story = [(e["type"], e.get("phase"), e.get("epoch")) for e in events if e["type"] != "batch"]
    assert story == [
        ("plan", None, None),  # the automatic recipe's choices
        ("phase", 1, None),
        ("epoch", 1, 1),
        ("epoch", 1, 2),
        ("epoch", 1, 3),
        ("plan", None, None),  # phase 2 planned again from the time really left
        ("phase", 2, None),
        ("epoch", 2, 1),
        ("done", None, None),
    ]
    phase1 = next(e for e in events if e["type"] == "phase")
    assert phase1["cached_features"] is True and phase1["replicas"] == 1
    assert phase1["global_batch_size"] == phase1["batch_size"] == 8
    batches = [e for e in events if e["type"] == "batch" and e.get("stage") != "features"]
    assert batches and all(e["images_per_s"] > 0 and e["eta_s"] is not None for e in batches)
    assert [e for e in events if e.get("stage") == "features"]  # the one feature pass is reported
    done = events[-1]
    assert done["best_val_accuracy"] == result.best_val_accuracy
    assert done["model_path"] == str(result.run_dir / "model.keras")


def test_head_learns_the_classes(lite0_run):
    _, result = lite0_run
    assert result.best_val_accuracy >= 0.85
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    from test_engine_helpers import colour_images

    images, labels = colour_images(per_class=4, size=64, seed=7)  # unseen images
    probabilities = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))
    assert probabilities.dtype == np.float32
    assert np.mean(probabilities.argmax(axis=1) == labels) >= 0.9


def test_phase2_unfreezes_whole_top_blocks_and_keeps_batchnorm_frozen(lite0_run):
    from workbench.models.surgery import block_names, block_of

    _, result = lite0_run
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    phase2 = next(e for e in read_events(result.run_dir) if e["type"] == "phase" and e["phase"] == 2)
    n = RunConfig.load(result.run_dir / "config.yaml").recipe.unfreeze_blocks
    assert phase2["unfrozen_blocks"] == block_names(model)[-n:]
    for layer in model.layers:
        block = block_of(layer.name)
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif block is not None and layer.weights:
            assert layer.trainable == (block in phase2["unfrozen_blocks"]), layer.name
    state = json.loads((result.run_dir / "checkpoints" / "state.json").read_text())
    assert state["phase"] == 2 and state["phase_done"] and state["epochs_done"] == 1


def test_stop_file_ends_the_run_after_the_current_batch_keeping_the_best(tmp_path):
    data = make_image_folder(tmp_path / "data")

    def stop_in_epoch_two(event):
        if event["type"] == "batch" and event["phase"] == 1 and event["epoch"] == 2:
            (run_dir / "STOP").write_text("")

    run_dir = tmp_path / "run"
    config = tiny_config(data, tmp_path, run_dir=str(run_dir), epochs=3, recipe={"cache_features": "off"})
    result = fine_tune(config, listeners=[stop_in_epoch_two])
    assert result.stopped and result.model_path == run_dir / "model.keras" and result.model_path.exists()
    events = read_events(run_dir)
    assert [(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"] == [(1, 1)]
    assert not [e for e in events if e["type"] == "phase" and e["phase"] == 2]
    assert events[-1]["type"] == "done" and events[-1]["stopped"] is True

    # a stopped run resumes where it stopped and completes
    from workbench.engine import resume

    resumed = resume(run_dir)
    assert not resumed.stopped and not (run_dir / "STOP").exists()
    epochs = [(e["phase"], e["epoch"]) for e in read_events(run_dir) if e["type"] == "epoch"]
    assert epochs == [(1, 1), (1, 2), (1, 3), (2, 1)]


def test_nan_loss_stops_with_an_error_event_and_keeps_the_last_good_checkpoint(tmp_path):
    data = make_image_folder(tmp_path / "data")
    config = tiny_config(
        data, tmp_path / "runs", epochs=1, fine_tune_epochs=2, recipe={"fine_tune_learning_rate": 1e30}
    )
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*phase 2.*checkpoints"):
        fine_tune(config)
    (run_dir,) = (tmp_path / "runs").iterdir()
    events = read_events(run_dir)
    assert events[-1]["type"] == "error" and "Lower the learning rate" in events[-1]["message"]
    assert not [e for e in events if e["type"] == "epoch" and e["phase"] == 2]
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["best_phase"] == 1 and (run_dir / "checkpoints" / state["best_weights"]).exists()
    assert (run_dir / "checkpoints" / state["last_weights"]).exists()


# ~30 s of two-phase training; with the suite near 25 minutes it runs with `pytest -m slow`.
@pytest.mark.slow
def test_user_listener_and_keras_callback_see_every_phase(tmp_path):
    """`fine_tune(listeners=[...], callbacks=[...])`: the hooks a TensorBoard writer or a user's own
    callback plugs into. The listener hears exactly the events written to events.jsonl; the Keras
    callback joins the fit of both phases (the head model on cached features, then the full model)."""

    class Recorder:
        def __init__(self):
            self.events = []

        def __call__(self, event):
            self.events.append(event)

    class EpochCounter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.fits, self.epochs = [], []

        def on_train_begin(self, logs=None):
            self.fits.append(len(self.model.layers))

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((len(self.fits), epoch + 1, logs["val_accuracy"]))

    data = make_image_folder(tmp_path / "data")
    recorder, counter = Recorder(), EpochCounter()
    config = tiny_config(data, tmp_path / "runs", epochs=2, fine_tune_epochs=1)
    result = fine_tune(config, listeners=[recorder], callbacks=[counter])

    assert recorder.events == read_events(result.run_dir)
    story = [(e["type"], e.get("phase"), e.get("epoch")) for e in recorder.events if e["type"] != "batch"]
    assert story == [
        ("plan", None, None),  # the automatic recipe's choices
        ("phase", 1, None),
        ("epoch", 1, 1),
        ("epoch", 1, 2),
        ("plan", None, None),  # phase 2 planned again from the time really left
        ("phase", 2, None),
        ("epoch", 2, 1),
        ("done", None, None),
    ]
    head_layers, full_layers = counter.fits
    phase1 = next(e for e in recorder.events if e["type"] == "phase")
    assert phase1["cached_features"] is True and head_layers < 5 < full_layers
    epochs = [e for e in recorder.events if e["type"] == "epoch"]
    # (fit number, epoch, val_accuracy the callback saw) against the epoch events
    assert counter.epochs == [
        (1, 1, epochs[0]["val_accuracy"]),
        (1, 2, epochs[1]["val_accuracy"]),
        (2, 1, epochs[2]["val_accuracy"]),
    ]


@pytest.mark.parametrize(
    ("num_images", "batches", "skipped", "sizes"),
    [
        (10, 3, 0, [4, 4, 2]),  # the last batch of 2 gives each replica one image
        (9, 2, 1, [4, 4]),  # a last batch of 1 would leave a replica empty: skipped
        (3, 1, 1, [2]),  # under one global batch: one batch of a multiple of the replica count
        (1, 0, 1, []),
    ],
)
def test_batching_gives_every_replica_a_share_of_each_batch(num_images, batches, skipped, sizes):
    import tensorflow as tf

    from workbench.engine.strategy import Batching

    batching = Batching(per_replica=2, replicas=2)
    dataset = tf.data.Dataset.range(num_images).batch(batching.global_batch)
    shared = batching.even_batches(dataset, num_images)
    assert [len(b) for b in shared] == sizes
    assert batching.batches(num_images) == batches and batching.skipped(num_images) == skipped
    assert batching.steps(num_images) == max(batches, 1)
    one = Batching(per_replica=4)
    assert one.even_batches(dataset, num_images) is dataset and one.skipped(num_images) == 0


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    from workbench.engine.optim import adamw, warmup_cosine

    schedule = warmup_cosine(0.1, total_steps=100, warmup_fraction=0.1)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-6)
    assert float(warmup_cosine(0.1, total_steps=100, warmup_fraction=0.0)(0)) == pytest.approx(0.1)
    optimizer = adamw(0.1, 100, warmup_fraction=0.1, weight_decay=0.01)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.01


def test_phases_are_data_and_cached_features_need_a_frozen_backbone():
    from workbench.engine.recipe import Phase, recipe_phases

    def phases(**options):  # the phases of a config whose recipe is chosen (fixed: the declared values)
        return recipe_phases(with_recipe_defaults(RunConfig.from_dict(options)))

    head, tune = phases(epochs=3, fine_tune_epochs=2)
    assert (head.number, head.unfreeze_blocks, head.features, head.from_best) == (1, None, True, False)
    assert (tune.number, tune.epochs, tune.unfreeze_blocks, tune.from_best) == (
        2,
        2,
        fixed_value("recipe.unfreeze_blocks"),
        True,
    )
    assert tune.learning_rate == fixed_value("recipe.fine_tune_learning_rate")
    assert len(phases(fine_tune_epochs=0)) == 1
    (images,) = phases(augment="light", fine_tune_epochs=0)
    assert not images.features
    with pytest.raises(ValueError, match="cached features need a frozen backbone"):
        Phase(2, "bad", epochs=1, learning_rate=1e-3, unfreeze_blocks=3, features=True)


def test_class_weights_only_when_imbalanced():
    balanced = [0] * 10 + [1] * 12
    assert class_weights(balanced, "auto") is None
    assert class_weights(balanced, "none") is None
    skewed = [0] * 30 + [1] * 10
    weights = class_weights(skewed, "auto")
    assert weights == pytest.approx({0: 40 / (2 * 30), 1: 40 / (2 * 10)})
    assert class_weights(balanced, "balanced") == pytest.approx({0: 22 / 20, 1: 22 / 24})


def test_cli_trains_and_prints_the_run_and_best_accuracy(tmp_path, capsys):
    from workbench.cli import main

    data = make_image_folder(tmp_path / "data", per_class=6)
    code = main(
        [
            "train",
            str(data),
            "--variant",
            "phi=-4",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "0",
            "--out",
            str(tmp_path / "runs"),
            "--val-fraction",
            "0.34",
            "--test-fraction",
            "0",
            "--quiet",
            "--no-evaluate",
            "--no-export",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"run: {run_dir}" in out and "best val accuracy: " in out


def test_cli_reports_bad_data_without_a_traceback(tmp_path, capsys):
    from workbench.cli import main

    code = main(["train", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-folder" in err and "Traceback" not in err
