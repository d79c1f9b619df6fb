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
