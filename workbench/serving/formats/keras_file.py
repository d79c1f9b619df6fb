"""`.keras` export (`<out>/keras/model.keras`): the run's model, to load back into Keras and train further.

The same archive format as a run's own `model.keras`, so vetting and loading live with the run code in
`workbench.serving.model_files` (`inspect_keras_archive`, `load_keras_model`); this module only says how
the format is written, recognised and run.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from workbench.serving.formats.base import ExportFormat, Runtime
from workbench.serving.model_files import ModelFileError, inspect_keras_archive, load_keras_model, model_resolution


class KerasRuntime(Runtime):
    """A vetted Keras model at its fixed input resolution.

    A `.keras` file is the trainable model, without the calibration in it: the run's (or the export's model
    card's) temperature and threshold are applied here, to the model's logits, as the other formats' graphs do."""

    def __init__(self, path: Path):
        from workbench.evaluation.calibrate import calibration_beside

        self.model = load_keras_model(path)  # vetted before anything else is read
        self.resolution = model_resolution(self.model)
        if self.resolution is None:
            raise ModelFileError(
                f"{path}: the model takes images of any size; workbench models have a fixed resolution"
            )
        self.calibration = calibration_beside(path)
        self._network = None
        if self.calibration is not None:
            from workbench.serving.calibrated import calibrated_network

            self._network, _ = calibrated_network(self.model, self.calibration)

    def predict_images(self, images, batch_size: int = 32):
        return self.classify_images(images, batch_size)[0]

    def classify_images(self, images, batch_size: int = 32):
        if self.calibration is None:
            probabilities = self.model.predict(images, batch_size=batch_size, verbose=0)
            return probabilities, probabilities.argmax(axis=1)
        return calibrated_answers(self._network, self.calibration, images, batch_size)


def calibrated_answers(network, calibration, images, batch_size: int = 32):
    """(probabilities, class index) of `images` through `network` (`serving.calibrated.calibrated_network`),
    in NumPy: what the exported graphs compute, for Keras models and to check the exports against."""
    import numpy as np

    from workbench.evaluation.calibration import softmax

    outputs = network.predict(images, batch_size=batch_size, verbose=0)
    logits, features = outputs if calibration.needs_features else (outputs, None)
    probabilities = softmax(logits, calibration.temperature).astype(np.float32)
    return probabilities, calibration.decide(logits, features)


@dataclass(frozen=True)
class KerasFormat(ExportFormat):
    def write(self, run, directory: Path) -> dict:
        import shutil

        from pipelines.files import atomic_path
        from workbench.evaluation.calibrate import OOD_FILE, read_calibration

        # The temporary keeps the .keras suffix: Keras picks the archive format from it.
        with atomic_path(directory / self.files[0]) as tmp:
            run.model.save(tmp)
        calibration = read_calibration(run.path)
        if calibration is not None and calibration.needs_features:
            # The trainable model holds no calibration: `predict` reads the card's, and a feature score's
            # statistics from this copy of the run's file, beside it.
            shutil.copyfile(run.path / OOD_FILE, directory / OOD_FILE)
        return {}

    def recognise(self, path: Path) -> Path | None:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            return path if "config.json" in archive.namelist() else None

    def verify(self, path: Path) -> None:
        inspect_keras_archive(path)

    def open(self, path: Path) -> KerasRuntime:
        return KerasRuntime(path)


KERAS = KerasFormat(name="keras", label=".keras", kind="keras", files=("model.keras",))
