"""Classify image files with any model workbench exports: a run directory, `.keras`, SavedModel or `.tflite`.

Every format gets the same pixels: files are decoded and resized by `workbench.serving.imaging` (the SavedModel
does the same inside its graph), and model files are opened through `workbench.serving.model_files`, which
refuses anything that is not ours or not safe before it is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.serving.model_files import (
    ModelFileError,
    inspect_saved_model,
    load_keras_model,
    locate_model,
    model_resolution,
    read_labels,
)


class TFLiteClassifier:
    """A `.tflite` classifier run by `tf.lite.Interpreter`: float32 RGB [0, 255] in, probabilities out.

    Quantised inputs and outputs (uint8/int8) are (de)quantised here with the scale and zero point the
    converter stored in the file, so callers always see floats.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None):
        import tensorflow as tf

        self.path = Path(path)
        with warnings.catch_warnings():
            # TF 2.20+ warns that tf.lite.Interpreter moves to the separate ai-edge-litert package; it is
            # still the interpreter shipped with TensorFlow, which is all this project depends on.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            self.interpreter = tf.lite.Interpreter(model_path=str(self.path), num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.resolution = int(self._input["shape"][1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self._dynamic_batch = int(self._input["shape_signature"][0]) == -1
        self._batch = int(self._input["shape"][0])
        self.interpreter.allocate_tensors()

    def _set_batch(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [batch, self.resolution, self.resolution, 3])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def _quantise(self, images: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind == "f":
            return images.astype(self.input_dtype)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(self.input_dtype)

    def _dequantise(self, values: np.ndarray) -> np.ndarray:
        if np.dtype(self._output["dtype"]).kind == "f":
            return values.astype(np.float32)
        scale, zero_point = self._output["quantization"]
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def invoke(self, images: np.ndarray) -> np.ndarray:
        """One interpreter call on a batch already at the model's resolution (the batch size sticks)."""
        self._set_batch(len(images))
        self.interpreter.set_tensor(self._input["index"], self._quantise(images))
        self.interpreter.invoke()
        return self._dequantise(self.interpreter.get_tensor(self._output["index"]))

    def predict_images(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, C) for float32 RGB images (N, R, R, 3) in [0, 255]."""
        step = batch_size if self._dynamic_batch else self._batch
        return np.concatenate([self.invoke(images[i : i + step]) for i in range(0, len(images), step)], axis=0)


def _read_images(paths: Sequence[str | Path]) -> list[bytes]:
    """The bytes of each file, each checked to decode as an image (errors name the file)."""
    import tensorflow as tf

    from workbench.serving.imaging import decode_rgb

    if not paths:
        raise ValueError("no images given; pass one or more image files (JPEG, PNG, GIF or BMP)")
    encoded = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: image file not found; check the path")
        data = path.read_bytes()
        try:
            decode_rgb(tf.constant(data))
        except (tf.errors.InvalidArgumentError, ValueError):
            raise ValueError(f"{path}: not an image TensorFlow can decode; use JPEG, PNG, GIF or BMP files") from None
        encoded.append(data)
    return encoded


def _probabilities(location, encoded: list[bytes]) -> tuple[np.ndarray, list[str]]:
    import tensorflow as tf

    from workbench.serving.imaging import decode_batch

    if location.kind == "savedmodel":
        inspect_saved_model(location.path)  # vetted from its protobuf before any of it is loaded
        signature = tf.saved_model.load(str(location.path)).signatures["serving_default"]
        outputs = signature(image_bytes=tf.constant(encoded))
        return outputs["probabilities"].numpy(), read_labels(location.labels_path)
    if location.kind == "tflite":
        classifier = TFLiteClassifier(location.path)
        images = decode_batch(tf.constant(encoded), classifier.resolution).numpy()
        return classifier.predict_images(images), read_labels(location.labels_path)
    model = load_keras_model(location.path)  # vetted before anything else is read
    labels = read_labels(location.labels_path)
    resolution = model_resolution(model)
    if resolution is None:
        raise ModelFileError(
            f"{location.path}: the model takes images of any size; workbench models have a fixed resolution"
        )
    images = decode_batch(tf.constant(encoded), resolution).numpy()
    return model.predict(images, batch_size=32, verbose=0), labels


def predict(model_path: str | Path, images: Sequence[str | Path], top_k: int = 5) -> list[dict]:
    """Top-k classes of each image file.

    Returns one dict per image, in order: `{"image": path, "predictions": [{"class", "index",
    "probability"}, ...]}` with the k most probable classes first.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    location = locate_model(model_path)
    encoded = _read_images(images)
    probabilities, labels = _probabilities(location, encoded)
    if probabilities.shape[1] != len(labels):
        raise ModelFileError(
            f"{location.labels_path}: lists {len(labels)} classes but the model predicts {probabilities.shape[1]}; "
            "the labels.txt does not belong to this model"
        )
    results = []
    for path, row in zip(images, probabilities, strict=True):
        order = np.argsort(-row, kind="stable")[:top_k]
        results.append(
            {
                "image": str(path),
                "predictions": [{"class": labels[i], "index": int(i), "probability": float(row[i])} for i in order],
            }
        )
    return results


def format_table(results: list[dict]) -> str:
    """The predictions as a plain-text table: one block per image, one row per class."""
    lines = []
    for result in results:
        lines.append(result["image"])
        width = max(len(p["class"]) for p in result["predictions"])
        for rank, p in enumerate(result["predictions"], 1):
            lines.append(f"  {rank:>2}. {p['class']:<{width}}  {p['probability']:7.2%}")
    return "\n".join(lines)
