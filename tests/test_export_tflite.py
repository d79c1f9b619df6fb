"""TFLite export (float32, float16, full-integer int8) run by tf.lite.Interpreter against the Keras model.

Tolerances: float32 and float16 must give the Keras top-1 class on every test image, with probabilities
within 1e-4 (float32) / 1e-2 (float16 weights; about 6e-4 is typical here).
int8 must agree with the Keras top-1 on at least 80 % of the test images; the model card reports its accuracy
against float32 on the validation split (the int8 gate's).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_tiny_run import RESOLUTION, exported, split_images, tiny_run

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
    import keras

    from workbench.serving.imaging import load_files

    images = load_files(split_images(tmp_path_factory), RESOLUTION)
    model = keras.saving.load_model(tiny_run(tmp_path_factory) / "model.keras", safe_mode=True)
    return images, model.predict(images, verbose=0)


def _interpret(path, images):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(details["index"], images.shape)
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]
    data = images
    if details["dtype"] != np.float32:
        scale, zero = details["quantization"]
        data = np.clip(np.round(images / scale + zero), 0, 255).astype(details["dtype"])
    interpreter.set_tensor(details["index"], data)
    interpreter.invoke()
    result = interpreter.get_tensor(output["index"]).astype(np.float32)
    if output["dtype"] != np.float32:
        scale, zero = output["quantization"]
        result = (result - zero) * scale
    return details, output, result


@pytest.mark.parametrize("format, atol", [("tflite", 1e-4), ("tflite-fp16", 1e-2)])
def test_float_tflite_matches_keras_top1(tmp_path_factory, keras_reference, format, atol):
    images, expected = keras_reference
    path = exported(tmp_path_factory, format)
    details, _, probabilities = _interpret(path, images)
    assert details["dtype"] == np.float32 and list(details["shape_signature"]) == [-1, RESOLUTION, RESOLUTION, 3]
    assert probabilities.argmax(1).tolist() == expected.argmax(1).tolist()
    np.testing.assert_allclose(probabilities, expected, atol=atol)
    assert (path.parent / "labels.txt").is_file() and (path.parent / "model_card.md").is_file()


def test_int8_is_full_integer_within_tolerance_and_reports_accuracy(tmp_path_factory, keras_reference):
    images, expected = keras_reference
    path = exported(tmp_path_factory, "tflite-int8")
    details, output, probabilities = _interpret(path, images)
    # Full integer: uint8 pixels in, uint8 probabilities out; RGB [0, 255] maps onto uint8 with scale ~1.
    assert details["dtype"] == np.uint8 and output["dtype"] == np.uint8
    assert details["quantization"][0] == pytest.approx(1.0, abs=0.05)
    agreement = float((probabilities.argmax(1) == expected.argmax(1)).mean())
    assert agreement >= 0.8

    card = json.loads((path.parent / "model_card.json").read_text())
    quantization = card["quantization"]
    # Measured on the validation split (the int8 gate's; tests/test_int8_gate.py), never on the test split.
    assert quantization["split"] == "val" and quantization["gate"]["passed"]
    assert quantization["num_images"] == sum(c["num_images"] for c in quantization["per_class"].values())
    assert card["tflite"]["mode"] == "int8" and card["tflite"]["calibration_images"] > 0
    assert 0.0 <= quantization["int8_accuracy"] <= 1.0 and "float32_accuracy" in quantization


def test_litert_runs_tflite_and_the_tensorflow_fallback_gives_identical_probabilities(
    tmp_path_factory, keras_reference, monkeypatch
):
    """LiteRT opens .tflite files (a probe imports it in a fraction of a second, TensorFlow in 5-10 s); where it is
    missing, tf.lite.Interpreter takes over with the very same results, quantised or not."""
    from workbench.serving.formats import tflite

    assert tflite.interpreter_module() == tflite.LITERT_INTERPRETER, "ai-edge-litert is missing: pip install -e ."
    images, _ = keras_reference
    for format in ("tflite", "tflite-int8"):
        path = exported(tmp_path_factory, format)
        litert = tflite.TFLiteClassifier(path)
        with monkeypatch.context() as patch:
            patch.setattr(tflite, "interpreter_module", lambda: tflite.TENSORFLOW_INTERPRETER)
            fallback = tflite.TFLiteClassifier(path)
        assert type(litert.interpreter).__module__ == tflite.LITERT_INTERPRETER
        assert type(fallback.interpreter).__module__ == tflite.TENSORFLOW_INTERPRETER
        np.testing.assert_array_equal(litert.predict_images(images), fallback.predict_images(images), err_msg=format)
