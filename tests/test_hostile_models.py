"""Hostile model files: the security specification of every model workbench opens.

A model file is a program. A SavedModel is a TensorFlow graph that can read and write files; a `.keras`
archive names classes that Keras imports and can carry Python bytecode; a `.tflite` FlatBuffer is parsed by
native code that trusts its offsets. `workbench predict` (and every loader built on
`workbench.serving.model_files` and the export formats) must refuse anything that is not a workbench model,
with a `ModelFileError` that says why, BEFORE any of it runs; on the command line that is exit code 2 and one
line, never a traceback or a native crash.

How each format is vetted:
* SavedModel: every op of every function must be one a real export uses (`savedmodel.SERVING_OPS`); the
  saver's file ops only in the saver's own functions.
* `.keras`: its config.json is size- and depth-capped before parsing, then every class it names must be one
  `build_model` emits (`model_files.KERAS_CLASSES`).
* `.tflite`: read once, opened first in a child process through TFLite's FlatBuffer verifier; a crash there is
  a message.

Each test below is one finding of the hardening report of 2026-11-28 (issue 11; id in a comment) or one
refusal that held up in that report and must keep holding. The two allowlists are data; the first tests prove
that they contain everything our own exports need.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from workbench.serving.model_files import (
    CONFIG_MAX_BYTES,
    CONFIG_MAX_DEPTH,
    KERAS_CLASSES,
    ModelFileError,
    config_classes,
    inspect_keras_archive,
    json_depth,
    load_keras_model,
)
from workbench.serving.predict import predict

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
REPO = Path(__file__).resolve().parents[1]
RESOLUTION = 32


# --- what our own builders and exports contain ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_models():
    """One model of each kind `build_model` makes: B-type (swish, squeeze-and-excitation, residual Add; φ = -4
    is the smallest with repeated blocks), Lite-type (ReLU6, no SE) and B-type under mixed precision."""
    import keras

    from workbench.models import build_model, get_variant
    from workbench.models.efficientnet_lite import EFFICIENTNET_LITE

    b_type = get_variant("phi=-4")
    # The Lite family has named variants only; φ = -4's width and depth on its architecture keep the model small.
    lite_type = dataclasses.replace(b_type, name="lite-phi=-4", architecture=EFFICIENTNET_LITE)
    models = {}
    for name, spec, policy in (
        ("b", b_type, "float32"),
        ("lite", lite_type, "float32"),
        ("mixed", b_type, "mixed_float16"),
    ):
        keras.mixed_precision.set_global_policy(policy)
        try:
            models[name] = build_model(spec, num_classes=3, input_shape=(RESOLUTION, RESOLUTION, 3))
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return models


def test_savedmodel_allowlist_holds_every_op_of_our_exports(real_models, tmp_path):
    """A1: the allowlist is built from what real exports contain; this re-collects it (every signature).

    The mixed-precision export (the one with Casts) also holds the test-time augmentation signatures (`tta`);
    a float32 TTA export is vetted in tests/test_export_tta.py. What they add (the mirror and the mean) does not
    depend on the architecture, and writing them for every model would make this test half as long again."""
    from tensorflow.core.protobuf import saved_model_pb2

    from workbench.evaluation.calibrate import Calibration
    from workbench.evaluation.ood import fit_gaussians
    from workbench.serving.formats.savedmodel import (
        RESTORE_OPS,
        SAVE_OPS,
        SERVING_OPS,
        disallowed_ops,
        inspect_saved_model,
        write_saved_model,
    )

    # Calibrated exports (temperature and threshold in the graph) of the rejection scores are collected too: the
    # mixed-precision one with a feature score on unit-norm features (`workbench.evaluation.ood`; the other
    # feature scores use a subset of its op types: MatMul, Mul, Sum, Sub, AddV2, Max).
    rng = np.random.default_rng(0)
    width = real_models["mixed"].get_layer("avg_pool").output.shape[-1]
    gaussians = fit_gaussians(rng.normal(size=(30, width)), np.arange(30) % 3, 3, normalised=True)
    calibrations = {
        "b": Calibration(1.5, "max_softmax", 0.5),
        "lite": Calibration(0.8, "energy", 1.0),
        "mixed": Calibration(1.0, "mahalanobis_l2", -100.0, gaussians),
    }
    for name, model in real_models.items():
        tta = name == "mixed"
        directory = write_saved_model(
            model, ["a", "b", "c"], RESOLUTION, tmp_path / name, tta=tta, calibration=calibrations.get(name)
        )
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
        graph = saved_model.meta_graphs[0]
        signatures = {"serving_default", "serving_rgb"} | ({"serving_tta", "serving_tta_rgb"} if tta else set())
        assert set(graph.signature_def) >= signatures
        assert disallowed_ops(graph) == {}, name
        inspect_saved_model(directory)
        functions = graph.graph_def.library.function
        serving = {node.op for f in functions if "traced_" not in f.signature.name for node in f.node_def}
        saver = {node.op for f in functions if "traced_" in f.signature.name for node in f.node_def}
        assert serving <= SERVING_OPS, (name, sorted(serving - SERVING_OPS))
        # The saver really uses its file ops, so the check above proves they are allowed there only.
        assert {"SaveV2", "RestoreV2"} <= saver <= SERVING_OPS | SAVE_OPS | RESTORE_OPS, name
        assert not (SAVE_OPS | RESTORE_OPS) & SERVING_OPS


def test_keras_allowlist_holds_every_class_our_builders_emit(real_models, tmp_path):
    """A3: the allowlist is built from the configs of built models; this re-collects it."""
    for name, model in real_models.items():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("config.json")
        config = json.loads(raw)
        config.pop("compile_config", None)
        assert config_classes(config) <= KERAS_CLASSES, (name, sorted(config_classes(config) - KERAS_CLASSES, key=str))
        assert len(raw) < CONFIG_MAX_BYTES // 16 and json_depth(raw) <= CONFIG_MAX_DEPTH // 2, name
        inspect_keras_archive(path)


def test_keras_floor_is_the_tested_version():
    """A3: pyproject's Keras floor is the version whose safe mode these tests ran against."""
    import keras

    pyproject = (REPO / "pyproject.toml").read_text()
    floor = pyproject.split('"keras>=')[1].split('"')[0]
    assert tuple(int(p) for p in floor.split(".")) >= (3, 15)
    assert tuple(int(p) for p in keras.__version__.split(".")[:2]) >= tuple(int(p) for p in floor.split(".")[:2])


# --- SavedModel --------------------------------------------------------------------------------------------


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "any.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def _hostile_saved_model(base: Path, effect) -> Path:
    """A valid `serving_default(image_bytes)` SavedModel with labels.txt whose signature also runs `effect()`."""
    import tensorflow as tf

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            with tf.control_dependencies([effect()]):
                return {"probabilities": tf.ones((tf.shape(image_bytes)[0], 3)) / 3.0}

    module = Hostile()
    directory = base / "1"
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    (directory / "labels.txt").write_text("a\nb\nc\n")
    return base


def _print_to_file(target: Path):
    import tensorflow as tf

    return lambda: tf.print("echo PWNED-by-saved-model", output_stream=f"file://{target}")


def _save_v2(target: Path):
    import tensorflow as tf

    return lambda: tf.raw_ops.SaveV2(
        prefix=str(target), tensor_names=["x"], shape_and_slices=[""], tensors=[tf.constant("echo PWNED")]
    )


def _text_line_dataset(target: Path):
    """Reads another file (the report read /etc/hostname; a file of the test's own is certain to exist) and
    copies its first line into `target`; WriteFile is refused anyway, TextLineDataset must be too."""
    import tensorflow as tf

    secret = target.parent / "secret.txt"
    secret.write_text("the secret\n")
    return lambda: tf.data.TextLineDataset(str(secret)).get_single_element()


def _write_file(target: Path):
    import tensorflow as tf

    return lambda: tf.io.write_file(str(target), "PWNED")


def _py_function(target: Path):
    import tensorflow as tf

    def payload():
        target.write_text("PWNED")
        return np.int64(0)

    return lambda: tf.py_function(payload, [], tf.int64)


@pytest.mark.parametrize(
    "effect, op",
    [
        (_print_to_file, "PrintV2"),  # A1: appends to any file (a shell start-up file gives code execution)
        (_save_v2, "SaveV2"),  # A1: a saver op outside the saver writes any bytes at any prefix
        (_text_line_dataset, "TextLineDataset"),  # A1: reads any file
        (_write_file, "WriteFile"),  # held up (report E): refused before and after the allowlist
        (_py_function, "EagerPyFunc"),  # held up (report E): calls back into Python
    ],
    ids=["printv2-to-file", "savev2-any-prefix", "textlinedataset-reads-any-file", "writefile", "py_function"],
)
def test_savedmodel_that_touches_files_or_python_is_refused_before_anything_runs(tmp_path, effect, op):
    target = tmp_path / "pwned"
    model = _hostile_saved_model(tmp_path / "evil", effect(target))
    with pytest.raises(ModelFileError, match=rf"refusing to load this SavedModel: it uses .*{op}"):
        predict(model, [_image(tmp_path)])
    assert not list(tmp_path.glob("pwned*")), "the model ran"


def test_savedmodel_file_op_hidden_in_an_unreferenced_function_is_refused(tmp_path):
    """A1: loading runs more than the signatures (resource initialisers, the restore function), so every
    function of the library is checked, not only the ones a signature reaches."""
    import tensorflow as tf

    target = tmp_path / "pwned"

    class Hidden(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            return {"probabilities": tf.ones((tf.shape(image_bytes)[0], 3)) / 3.0}

        @tf.function(input_signature=[])
        def other(self):
            tf.io.write_file(str(target), "PWNED")

    module = Hidden()
    directory = tmp_path / "evil" / "1"
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    (directory / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(ModelFileError, match="WriteFile"):
        predict(directory, [_image(tmp_path)])
    assert not target.exists()


# --- .keras ------------------------------------------------------------------------------------------------


def _rewrite_config(source: Path, destination: Path, edit) -> Path:
    """A copy of the .keras archive `source` whose config.json is `edit(config)` (edited in place)."""
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(destination, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return destination


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


def _as_lambda(config):
    layer = _layer(config, "stem_activation")
    layer.update(class_name="Lambda", module="keras.layers")
    layer["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "print('PWNED')"}}


def _as_os_system(config):
    layer = _layer(config, "stem_activation")
    layer.update(class_name="system", module="os", config="touch pwned")


def _as_tfsm_layer(config):
    layer = _layer(config, "stem_activation")
    layer.update(class_name="TFSMLayer", module="keras.layers")
    layer["config"].update(filepath="/tmp/evil_saved_model", call_endpoint="serve")


def _with_unlisted_initializer(config):
    # A harmless Keras class, but not one build_model emits: the allowlist refuses what Keras would accept.
    _layer(config, "stem_conv")["config"]["kernel_initializer"] = {
        "module": "keras.initializers",
        "class_name": "GlorotUniform",
        "config": {"seed": None},
        "registered_name": None,
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (_as_lambda, r"Lambda \(carries Python code\)"),  # held up (report E)
        (_as_os_system, r"class 'system' from module 'os' \(not Keras\)"),  # held up (report E)
        (_as_tfsm_layer, r"TFSMLayer \(runs an external SavedModel"),  # A3: Keras 3.10 loads it
        (_with_unlisted_initializer, r"keras.initializers.GlorotUniform \(not a class workbench models"),  # A3
    ],
    ids=["lambda", "os-system", "tfsmlayer", "unlisted-keras-class"],
)
def test_keras_config_naming_a_class_our_builders_do_not_emit_is_refused_before_keras_reads_it(
    real_models, tmp_path, edit, message
):
    source = tmp_path / "real.keras"
    real_models["b"].save(source)
    crafted = _rewrite_config(source, tmp_path / "crafted.keras", edit)
    # inspect_keras_archive involves no Keras at all: the refusal does not depend on the installed version.
    with pytest.raises(ModelFileError, match=message):
        inspect_keras_archive(crafted)
    with pytest.raises(ModelFileError, match=message):
        load_keras_model(crafted)


def test_real_tfsm_layer_model_is_refused_and_its_saved_model_never_runs(tmp_path):
    """A3 (and held up in report E with Keras 3.15): a model built by Keras itself around a TFSMLayer."""
    import keras
    import tensorflow as tf

    target = tmp_path / "pwned_tfsm.txt"

    class Identity(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 3), tf.float32)])
        def serve(self, x):
            with tf.control_dependencies([tf.print("PWNED", output_stream=f"file://{target}")]):
                return tf.identity(x)

    module = Identity()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serve": module.serve})
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.TFSMLayer(str(tmp_path / "sm"), call_endpoint="serve", name="pre")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    path = tmp_path / "tfsm.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x)).save(path)
    target.unlink(missing_ok=True)  # building the model traced the SavedModel; only loading is under test
    with pytest.raises(ModelFileError, match="TFSMLayer"):
        load_keras_model(path)
    assert not target.exists()


def _archive_with_config(path: Path, config_json: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", config_json)
    return path


def test_keras_config_over_the_size_cap_is_refused_unread(tmp_path):
    """A5: a small .keras whose config.json inflates past the cap (3 GB took 10 GB of memory and 92 s)."""
    path = _archive_with_config(tmp_path / "bomb.keras", b"{" + b" " * CONFIG_MAX_BYTES + b"}")
    assert path.stat().st_size < 100_000
    with pytest.raises(ModelFileError, match=r"config.json is 16,777,218 bytes uncompressed, over the 16 MiB"):
        load_keras_model(path)


def test_keras_config_nested_too_deep_is_refused_unparsed(tmp_path, capsys):
    """A5 and D: a config.json 100,000 levels deep raised RecursionError (a traceback, exit 1)."""
    from workbench.cli import main

    path = _archive_with_config(tmp_path / "deep.keras", b"[" * 100_000 + b"]" * 100_000)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelFileError, match=r"nests 100,000 levels deep, over the 64"):
        inspect_keras_archive(path)
    # Brackets inside strings are text, not nesting.
    assert json_depth(b'{"a": "[[[[{{{{", "b": ["\\"[["]}') == 2
    assert main(["predict", str(path), str(_image(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "levels deep" in err and "Traceback" not in err


# --- TFLite ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_tflite(real_models):
    from workbench.serving.formats.tflite import convert_tflite

    return convert_tflite(real_models["lite"], RESOLUTION, "float32")


def _flipped(data: bytes, seed: int) -> bytes:
    """`data` with 20 random bytes of its first 4 KiB replaced (6 of 6 such files crashed predict)."""
    rng = np.random.default_rng(seed)
    corrupt = bytearray(data)
    for index in rng.integers(0, 4096, 20):
        corrupt[index] = int(rng.integers(0, 256))
    return bytes(corrupt)


@pytest.mark.parametrize(
    "crafted",
    [
        lambda real: b"\xff\xff\xff\x7fTFL3" + b"\x00" * 64,  # A2: root offset out of range (SIGSEGV, exit 139)
        lambda real: _flipped(real, 1),  # A2: a real export with bytes flipped
        lambda real: _flipped(real, 2),  # A2
        lambda real: b"\x00\x00\x00\x00TFL3" + b"garbage!" * 8,  # held up (report E): a garbage TFL3 header
        lambda real: real[:2000],  # held up (report E): a truncated file
    ],
    ids=["bad-root-offset", "flipped-1", "flipped-2", "garbage-header", "truncated"],
)
def test_malformed_tflite_is_refused_and_never_crashes_the_process(tmp_path, real_tflite, crafted):
    path = tmp_path / "model.tflite"
    path.write_bytes(crafted(real_tflite))
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(ModelFileError, match="not a valid TFLite model"):
        predict(path, [_image(tmp_path)])


# Slow (a TensorFlow import in the child, 5-10 s each): the default suite probes with LiteRT, which pyproject installs.
@pytest.mark.slow
def test_probe_with_the_tensorflow_fallback_refuses_and_accepts_the_same_files(tmp_path, real_tflite, monkeypatch):
    from workbench.serving.formats import tflite

    monkeypatch.setattr(tflite, "interpreter_module", lambda: tflite.TENSORFLOW_INTERPRETER)
    path = tmp_path / "model.tflite"
    for crafted in (b"\xff\xff\xff\x7fTFL3" + b"\x00" * 64, _flipped(real_tflite, 1), real_tflite[:2000]):
        with pytest.raises(ModelFileError, match="not a valid TFLite model"):
            tflite.probe_tflite(path, crafted)
    tflite.probe_tflite(path, real_tflite)


def test_real_tflite_export_passes_the_probe(tmp_path, real_tflite):
    path = tmp_path / "model.tflite"
    path.write_bytes(real_tflite)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    [result] = predict(path, [_image(tmp_path)], top_k=3)
    assert sum(p["probability"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-4)


def test_tflite_with_flex_ops_gets_a_clear_message(tmp_path):
    """D: Select-TF ops gave a RuntimeError traceback; the interpreter has no Flex delegate, so refuse clearly."""
    import tensorflow as tf

    class Flex(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
        def serve(self, x):
            return tf.reshape(tf.linalg.inv(tf.reshape(x, (1, 2, 2))), (1, 4))

    module = Flex()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "flex.tflite"
    path.write_bytes(converter.convert())
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(ModelFileError, match=r"Select TensorFlow \(Flex\) ops"):
        predict(path, [_image(tmp_path)])


# --- the command line ----------------------------------------------------------------------------------------


def _cli_predict(model: Path, image: Path) -> subprocess.CompletedProcess:
    # The environment a user runs it in: conftest's TF_CPP_MIN_LOG_LEVEL would switch off the CLI's own quieting.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "workbench", "predict", str(model), str(image)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=model.parent)


def test_cli_predict_on_hostile_files_exits_2_with_one_line(tmp_path):
    """D: a native crash (exit 139) or a model that ran (exit 0) became exit 2 and one line."""
    crashing = tmp_path / "crash" / "model.tflite"
    crashing.parent.mkdir()
    crashing.write_bytes(b"\xff\xff\xff\x7fTFL3" + b"\x00" * 64)
    (crashing.parent / "labels.txt").write_text("a\nb\nc\n")
    target = tmp_path / "pwned_printv2.txt"
    printing = _hostile_saved_model(tmp_path / "sm_print", _print_to_file(target))
    for model, message in ((crashing, "not a valid TFLite model"), (printing, "refusing to load this SavedModel")):
        result = _cli_predict(model, _image(tmp_path))
        assert result.returncode == 2, (model, result.returncode, result.stderr[-2000:])
        [line] = result.stderr.strip().splitlines()  # the whole of stderr: one line, no traceback
        assert line.startswith("workbench predict: ") and message in line
    assert not target.exists()
