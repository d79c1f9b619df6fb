"""What an export format is: one object that writes, recognises, vets and opens its kind of model file.

A format family (SavedModel, `.keras`, TFLite, next ONNX) is one module in this package holding a subclass
of `ExportFormat` and its `Runtime`; each registered instance is one row of `workbench.serving.registry`.
Everything that used to switch on a format string (writing, the model card's input line, locating a file
by its content, loading it for `predict`) asks the format object instead.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from workbench.serving.model_files import Run

# The model card's "input" line of a model that takes fixed-size float images (placeholder: pixels).
FLOAT_INPUT = "float32 RGB (B, {size}, {size}, 3) in [0, 255], centre-cropped and resized; normalised inside the model"


class Runtime(abc.ABC):
    """A loaded model: float32 RGB batches or encoded image bytes → probabilities (N, C) float32 (calibrated
    when the export is: `workbench.serving.calibrated`), and with `classify_*` the class index too.

    `resolution` is the square input size (pixels) the runtime resizes files to, or None when the model
    resizes inside its graph (SavedModel).
    """

    resolution: int | None = None

    @abc.abstractmethod
    def predict_images(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, C) for float32 RGB images (N, R, R, 3) in [0, 255] at `resolution`."""

    def predict_bytes(self, encoded: list[bytes]) -> np.ndarray:
        """Probabilities (N, C) for encoded JPEG/PNG/GIF/BMP images, decoded by `workbench.serving.imaging`."""
        return self.classify_bytes(encoded)[0]

    def classify_images(self, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, C), class index (N,)) for float32 RGB images; the index is -1 ("unknown") where a
        calibrated model rejects the image. This default has no rejection: the index is the argmax."""
        probabilities = self.predict_images(images, batch_size)
        return probabilities, probabilities.argmax(axis=1)

    def classify_bytes(self, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """`classify_images` of encoded JPEG/PNG/GIF/BMP images, decoded by `workbench.serving.imaging`."""
        import tensorflow as tf

        from workbench.serving.imaging import decode_batch

        return self.classify_images(decode_batch(tf.constant(encoded), self.resolution).numpy())


@dataclass(frozen=True)
class ExportFormat(abc.ABC):
    """One export format.

    Attributes:
        name: the `--format` value and the export sub-folder (`<out>/<name>/`); unique in the registry.
        label: what a UI shows for it.
        kind: what `locate_model` reports for its files; formats of one family share it (every TFLite
            variant is `tflite`) and the first registered one opens them.
        files: what the export folder holds besides `labels.txt` and the model card; `files[0]` is the
            model file returned by `export`, unless the format is `versioned`.
        input: the model card's description of the input, `{size}` standing for the resolution in pixels.
        versioned: the export is a numbered, immutable folder (`<out>/<version>/`, TF Serving's layout)
            written whole into a staging folder and renamed, instead of a file replaced in `<out>/<name>/`.
        calibrated_graph: the run's `calibration.json` (temperature, rejection threshold) is written into the
            graph as constants; otherwise only into the model card.
    """

    name: str
    label: str
    kind: str
    files: tuple[str, ...]
    input: str = FLOAT_INPUT
    versioned: bool = False
    # The run's calibration (temperature, rejection threshold) is inside the written graph; a format without
    # it (.keras, int8 TFLite) still records it in the model card, and `workbench predict` applies it.
    calibrated_graph: bool = False

    def destination(self, base: Path, version: int | None) -> Path:
        """The folder this export goes into under `base`. Checked before the run's model is loaded, so
        a refused export fails at once; `version` only means something to versioned formats."""
        return base / self.name

    def model_path(self, directory: Path) -> Path:
        """What `export` returns for an export written into `directory`."""
        return directory if self.versioned else directory / self.files[0]

    def describe_input(self, resolution: int) -> str:
        return self.input.format(size=resolution)

    def with_tta(self) -> ExportFormat:
        """This format, writing flip test-time augmentation into the export as extra entry points beside the
        default one (`export(..., tta=True)`). Only a format with named entry points (SavedModel signatures)
        has room for them; a one-function file would have to replace its default, so the others refuse."""
        raise ValueError(
            f"--tta: the {self.name} format has a single entry point, and TTA never replaces the default one; "
            "export with --format savedmodel --tta, or keep this format and predict with `workbench predict --tta`"
        )

    def with_int8_gate(
        self, calibration_images: int | None = None, max_drop: float | None = None, force: bool = False
    ) -> ExportFormat:
        """This format with another int8 calibration size, accuracy limit (points) or `force` (export even when
        int8 loses more than the limit). Only the int8 format calibrates and quantises; the others refuse."""
        raise ValueError(
            f"--int8-calibration-images, --max-int8-drop and --force: the {self.name} format is not quantised to "
            "int8; use them with --format tflite-int8, or drop them"
        )

    @abc.abstractmethod
    def write(self, run: Run, directory: Path) -> dict:
        """Write the model files of `run` into `directory` (atomically); return extra model-card fields."""

    @abc.abstractmethod
    def recognise(self, path: Path) -> Path | None:
        """The model at `path` if its content is this format (reading bytes, never running them), else None."""

    @abc.abstractmethod
    def verify(self, path: Path) -> None:
        """Vet a model of this format without running any of it; raise `ModelFileError` saying why not."""

    @abc.abstractmethod
    def open(self, path: Path) -> Runtime:
        """Verify, then load the model at `path` for prediction."""
