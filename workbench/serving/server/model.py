"""The model a server serves: located and opened by the export-format registry, as `workbench predict` does.

Each image is checked on its own before it joins a batch (the header's format and the pixel limit of
`workbench.serving.imaging.check_image_bytes`: a decompression bomb is refused before any decoding), so a
bad image fails only its own request. An image whose header is fine but whose data is not (a truncated
JPEG) fails inside the model call; the batch is then run again image by image to find which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workbench.serving.formats.base import Runtime
    from workbench.serving.model_files import ModelLocation

# What TF Serving's URLs and our metrics labels can carry without escaping.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_NAME = "model"  # TF Serving's own default --model_name


@dataclass(frozen=True)
class Answer:
    """The model's answer for one image: its (calibrated) probabilities, and the class index it answers, which is
    -1 ("unknown") when a calibrated model rejects the image (README, "Calibration and rejection")."""

    probabilities: np.ndarray
    index: int


@dataclass(frozen=True)
class ImageInput:
    """One image of a request: its bytes, and how errors name it (`instances[2]`, the upload's file name)."""

    source: str
    data: bytes


def default_name(location: ModelLocation) -> str:
    """The name a model is served under unless `--name` says otherwise: its export base folder's name.

    `saved_models/flowers/3` (SavedModel version), `saved_models/flowers/tflite/model.tflite` and
    `runs/flowers/` are all served as `flowers`, the name TF Serving would be given for that base folder.
    """
    from workbench.serving.registry import format_names

    path = location.path
    if location.kind in ("savedmodel", "run"):  # a version folder, or the run's model.keras
        base = path.parent.name
    elif path.parent.name in format_names():  # <out>/<format>/model.<ext>
        base = path.parent.parent.name
    else:
        base = path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:128]
    return name if MODEL_NAME.fullmatch(name or "") else DEFAULT_NAME


def check_name(name: str) -> str:
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"--name {name!r}: a model name is 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit (it is part of the URL /v1/models/<name>:predict)"
        )
    return name


class ServedModel:
    """A model opened for serving: `classify` turns image inputs into probability rows."""

    def __init__(self, location: ModelLocation, runtime: Runtime, labels: list[str], name: str):
        self.location = location
        self.runtime = runtime
        self.labels = labels
        self.name = name
        # TF Serving reports the version folder's number; a single-file model is version 1.
        self.version = int(location.path.name) if location.kind == "savedmodel" and location.path.name.isdigit() else 1

    @classmethod
    def load(cls, model_path: str | Path, name: str | None = None) -> ServedModel:
        """Locate, vet and open the model at `model_path` (as `workbench predict` does), then run one warm-up
        image through it: the first request does not pay for tracing, and a labels.txt of another model is
        refused now rather than on every request."""
        from workbench.serving.model_files import locate_model
        from workbench.serving.predict import check_labels, open_model

        location = locate_model(model_path)
        served = cls(location, *open_model(location), name=check_name(name) if name else default_name(location))
        check_labels(served.predict([_warm_up_image()])[0].shape[1], served.labels, location)
        return served

    @property
    def format(self) -> str:
        return self.location.format

    def predict(self, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, C) and answered class indices (N,) of encoded images, as `workbench predict` gets
        them (`Runtime.classify_bytes`: -1 where the model rejects); TensorFlow's error if one does not decode."""
        probabilities, indices = self.runtime.classify_bytes(encoded)
        return np.asarray(probabilities, dtype=np.float32), np.asarray(indices, dtype=np.int64)

    def _answers(self, encoded: list[bytes]) -> list[Answer]:
        probabilities, indices = self.predict(encoded)
        return [Answer(row, int(index)) for row, index in zip(probabilities, indices, strict=True)]

    def classify(self, images: list[ImageInput]) -> list[Answer | ValueError]:
        """One `Answer` per image, or the `ValueError` (naming the image and the fix) that refuses it.

        Runs in the batcher's worker thread; an unexpected failure of the model raises for the whole batch.
        """
        from workbench.serving.imaging import check_image_bytes, decode_errors, undecodable

        results: list[np.ndarray | ValueError | None] = [None] * len(images)
        valid = []
        for i, image in enumerate(images):
            try:
                check_image_bytes(image.data, image.source)
                valid.append(i)
            except ValueError as error:
                results[i] = error
        if valid:
            try:
                rows: list = self._answers([images[i].data for i in valid])
            except decode_errors():  # one of them does not decode: find it, answer the others
                rows = []
                for i in valid:
                    try:
                        rows.append(self._answers([images[i].data])[0])
                    except decode_errors():
                        rows.append(undecodable(images[i].source))
            for i, row in zip(valid, rows, strict=True):
                results[i] = row
        return results  # type: ignore[return-value]  # every slot is filled


def _warm_up_image() -> bytes:
    """A small grey PNG (64x64, larger than the smallest variant's input), encoded in memory."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
