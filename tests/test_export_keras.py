"""`.keras` export and the refusal of model files that are not ours or not safe (never executed)."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
from helpers_tiny_run import exported, tiny_run

from workbench.serving.model_files import ModelFileError, inspect_keras_archive, load_keras_model, locate_model


def test_keras_export_loads_back_with_safe_mode_and_same_outputs(tmp_path_factory):
    import keras

    path = exported(tmp_path_factory, "keras")
    assert path.name == "model.keras" and (path.parent / "labels.txt").is_file()
    assert json.loads((path.parent / "model_card.json").read_text())["format"] == "keras"
    reloaded = keras.saving.load_model(path, safe_mode=True)
    original = load_keras_model(tiny_run(tmp_path_factory) / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), original.predict(images, verbose=0), atol=1e-6)


def _tiny_keras(path, with_lambda=False, head_name="predictions"):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3)(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name=head_name)(x)).save(path)
    return path


def test_lambda_layer_is_refused_before_keras_reads_it(tmp_path):
    path = _tiny_keras(tmp_path / "lambda.keras", with_lambda=True)
    with pytest.raises(ModelFileError, match=r"Lambda.*Python code"):
        load_keras_model(path)


def test_config_naming_foreign_code_is_refused_and_not_run(tmp_path):
    """A crafted archive that asks Keras to import `os.system`: refused from the config alone."""
    source = _tiny_keras(tmp_path / "plain.keras")
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1]["module"] = "os"
    config["config"]["layers"][1]["class_name"] = "system"
    config["config"]["layers"][1]["config"] = f"touch {marker}"
    files["config.json"] = json.dumps(config).encode()
    crafted = tmp_path / "crafted.keras"
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match=r"'os'.*not Keras"):
        load_keras_model(crafted)
    assert not marker.exists()


def test_foreign_keras_model_pickle_and_random_bytes_are_refused(tmp_path):
    foreign = _tiny_keras(tmp_path / "foreign.keras", head_name="logits")
    with pytest.raises(ModelFileError, match="not a workbench image classifier"):
        inspect_keras_archive(foreign)

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(Payload()))
    random_file = tmp_path / "model.keras"
    random_file.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (pickled, random_file, tmp_path / "model.h5"):
        if path.suffix == ".h5":
            path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
        with pytest.raises(ModelFileError, match="not a model file workbench can load"):
            locate_model(path)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="no such file"):
        locate_model(tmp_path / "missing.keras")


def test_cli_export_prints_the_layout_and_refuses_bad_runs(tmp_path_factory, tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "saved_models" / "tiny"
    assert main(["export", str(tiny_run(tmp_path_factory)), "--format", "keras", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "keras" / "model.keras") in printed and "model_card.md" in printed
    written = sorted(p.name for p in (out / "keras").iterdir())
    assert written == ["labels.txt", "model.keras", "model_card.json", "model_card.md"]
    assert main(["export", str(tmp_path / "no-run"), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "no-run" in err and "not a finished run directory" in err and "Traceback" not in err


def _folder_state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_reexport_keeps_the_previous_export_and_labels_always_match_their_model(tmp_path_factory, tmp_path):
    # B7 (issue 11): a re-export replaced keras/model.keras silently, and labels.txt was written after the
    # model, so a kill between the two left a new model beside old labels. Now a whole folder is staged
    # and swapped in; the folder it replaces is kept as keras.previous/ (README, export paragraph).
    import shutil
    import threading
    from unittest import mock

    from workbench.serving import export as export_module

    run = tiny_run(tmp_path_factory)
    out = tmp_path / "out"
    first = export_module.export(run, "keras", out=out)
    first_state = _folder_state(first.parent)
    second = export_module.export(run, "keras", out=out)
    assert second == first == out / "keras" / "model.keras"
    assert _folder_state(out / "keras.previous") == first_state  # the first export, kept whole
    assert sorted(p.name for p in out.iterdir()) == ["keras", "keras.previous"]  # no staging leftovers
    second_state = _folder_state(out / "keras")

    # A run with other class names, killed (an exception here) after its model but before labels.txt:
    # the folder beside which the labels sit is untouched, model and labels still belong together.
    other = tmp_path / "other-run"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("eval", "data"))
    (other / "labels.txt").write_text("cyan\nmagenta\nyellow\n")

    def killed(path, text):
        raise KeyboardInterrupt("killed between the model and labels.txt")

    # export writes labels.txt with pipelines.files.atomic_write_text, imported when it runs.
    with mock.patch("pipelines.files.atomic_write_text", killed), pytest.raises(KeyboardInterrupt):
        export_module.export(other, "keras", out=out)
    assert _folder_state(out / "keras") == second_state
    assert (out / "keras" / "labels.txt").read_text() == "blue\ngreen\nred\n"
    assert sorted(p.name for p in out.iterdir()) == ["keras", "keras.previous"]

    # Two sessions of the app (threads of one process) exporting at once: both succeed, both folders whole.
    errors = []

    def export_in_thread():
        try:
            export_module.export(run, "keras", out=out)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=export_in_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for folder in ("keras", "keras.previous"):
        assert sorted(p.name for p in (out / folder).iterdir()) == [
            "labels.txt",
            "model.keras",
            "model_card.json",
            "model_card.md",
        ]
        inspect_keras_archive(out / folder / "model.keras")
    assert sorted(p.name for p in out.iterdir()) == ["keras", "keras.previous"]
