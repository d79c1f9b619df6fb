"""TFLite: float32, float16 weights and full-integer int8 (`<out>/<name>/model.tflite`), and their runtime.

The three are one family: the same converter with another mode, the same file kind (`tflite`), the same
interpreter. A FlatBuffer holds no code, but TensorFlow's interpreter trusts the offsets of a file it is handed by
path: crafted bytes crash it (SIGSEGV, hardening report A2). Built from bytes (`model_content`) it runs the
FlatBuffers verifier first, which refused every structural corruption we tried (the report's out-of-range root
offset, 150 exports with 20 bytes flipped in their first 4 KiB), but the verifier does not check what the tables mean (tensor and buffer indices, shapes), and
that is where a crash can still hide. So an untrusted file is opened twice, both times from the same bytes read
once: first in a child process (`probe_tflite`: build, allocate, run once on zeros; a crash there is a message),
then, only if that succeeded, here. Both opens use the same runtime (`interpreter_module`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.serving.formats.base import ExportFormat, Runtime
from workbench.serving.model_files import ModelFileError, Run, split_files

if TYPE_CHECKING:
    from workbench.evaluation.calibrate import Calibration

TFLITE_IDENTIFIER = b"TFL3"  # FlatBuffer file identifier of every .tflite model, at byte offset 4
# Training-split images that calibrate the int8 ranges (`--int8-calibration-images`). benchmarks/bench_int8.py
# (Lite0 at 128 px, CIFAR-10 subset, 600 val images, README "Evaluate, explain, export, predict"): 100, 300 and
# 1,000 images all kept int8 within the 1-point gate (drops -0.83, -0.33 and 0.00 points: one image is 0.17,
# so noise) but converted in 34, 35 and 46 s. 300 is the TFLite guidance ("a few hundred"), costs about a second
# more than 100 for three times the sample of each class's activations, and a quarter less than 1,000, which
# bought nothing measurable. Raise it when the gate refuses.
DEFAULT_CALIBRATION_IMAGES = 300
# The int8 gate (`--max-int8-drop`): the most top-1 accuracy, in percentage points of the validation split, that
# int8 may lose against float32 before the export is refused. Quantisation can quietly cost 15 points
# (tensorflow/tpu#549); one point is within what a retrain with another seed moves.
DEFAULT_MAX_INT8_DROP = 1.0
# The gate measures on the validation split: the test split stays untouched for the final report.
GATE_SPLIT = "val"
# How many of the classes that lose most the refusal names.
WORST_CLASSES = 3
# Seconds the probe may take: a fresh interpreter process imports the TFLite runtime (under a second for LiteRT,
# 5-10 s for TensorFlow on a busy machine) and runs the model once on one image (about a second for the largest
# variant on one core).
PROBE_TIMEOUT = 180
# The interpreter modules, preferred first. LiteRT (`ai-edge-litert`) is the TFLite runtime on its own, which
# TensorFlow 2.20+ points to as tf.lite.Interpreter's successor: importing it takes about 0.2 s where TensorFlow
# takes 5-10 s, which is most of what a probe costs. It gives the same outputs (bit for bit on our float32, float16
# and int8 exports) and the same refusals. tf.lite.Interpreter remains the fallback where it is not installed.
LITERT_INTERPRETER = "ai_edge_litert.interpreter"
TENSORFLOW_INTERPRETER = "tensorflow.lite.python.interpreter"

# Run by `probe_tflite` in a child process: argv[1] names the interpreter module (the parent's, so the probe vouches
# for the runtime that opens the bytes next); the model's bytes arrive on stdin; one JSON line goes to stdout.
_PROBE = """
import importlib, json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
Interpreter = importlib.import_module(sys.argv[1]).Interpreter
try:
    interpreter = Interpreter(model_content=sys.stdin.buffer.read(), num_threads=1)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
else:
    print(json.dumps({"error": None}))
"""


def _float_graph(model, resolution: int, directory: Path, calibration: Calibration | None = None) -> Path:
    """A plain SavedModel (float32 images at the model's resolution → probabilities) for the TFLite converter.

    With `calibration`, two outputs: the temperature-scaled probabilities and the class index, -1 below the
    rejection threshold (`workbench.serving.calibrated`); TFLite has no strings, so the name "unknown" is the
    runtime's (`TFLiteClassifier`) to give."""
    import tensorflow as tf
    from keras.export import ExportArchive

    from workbench.serving.calibrated import calibrated_network

    archive = ExportArchive()
    archive.track(model)
    if calibration is None:
        serve = lambda images: model(images, training=False)  # noqa: E731
    else:
        network, answer = calibrated_network(model, calibration)
        archive.track(network)

        def serve(images):
            probabilities, index = answer(images)
            return {"probabilities": probabilities, "class_index": index}

    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec((None, resolution, resolution, 3), tf.float32, name="images")],
    )
    archive.write_out(str(directory), verbose=False)
    return directory


def representative_images(run: Run, limit: int = DEFAULT_CALIBRATION_IMAGES):
    """Training-split images (float32 [0, 255] at the run's resolution) for int8 calibration."""
    from workbench.serving.imaging import load_files

    paths, _ = split_files(run, "train", limit)
    if not paths:
        raise ValueError(
            f"{run.path}: int8 export needs training images for calibration, but the run has no manifest.json "
            "with a train split; export a run trained by `workbench train`, or use --format tflite-fp16"
        )
    return load_files(paths, run.resolution)


def _calibrate_int8(converter, calibration) -> None:
    import tensorflow as tf

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 conversion needs calibration images")

    def representative_dataset():
        for i, image in enumerate(calibration):
            image = image[None].astype("float32")
            if i == 0:
                # Pin the calibrated input range to the full [0, 255]: uint8 pixels then map 1:1
                # (scale 1, zero point 0) and bright images outside the calibration set's range
                # are not clipped. Two pixels barely move the ranges of the later layers.
                image = image.copy()
                image[0, 0, 0, :], image[0, -1, -1, :] = 0.0, 255.0
            yield [image]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8


def convert_tflite(
    model, resolution: int, mode: str, calibration=None, *, calibrated: Calibration | None = None
) -> bytes:
    """Convert to a TFLite flatbuffer. `mode`: float32 | float16 | int8 (needs `calibration` images).

    int8 is full-integer: every op, the input (uint8 pixels, which RGB in [0, 255] maps onto exactly)
    and the output (uint8 probabilities) are quantised, as integer-only accelerators require. `calibrated`: the
    run's temperature and rejection threshold, in the graph (float modes only; see `_float_graph`).
    """
    import tensorflow as tf

    if calibrated is not None and mode == "int8":
        raise ValueError("an int8 TFLite model has no room for the temperature and threshold: convert it uncalibrated")
    if calibrated is not None and calibrated.needs_features and mode != "float32":
        # Measured on the tiny test run: half precision moved one decision in twelve near the threshold. The
        # distances are differences of large quadratic forms, which half-precision constants do not keep.
        raise ValueError(
            f"a {mode} TFLite model cannot hold the {calibrated.score} rejection score's statistics precisely "
            "enough (half precision moves decisions near the threshold); export --format tflite (float32) or "
            "savedmodel, or fit the calibration with --reject-score energy (`workbench evaluate RUN --reject auto "
            "--reject-score energy`) before exporting"
        )
    with tempfile.TemporaryDirectory() as tmp:
        graph = _float_graph(model, resolution, Path(tmp) / "float", calibrated)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(graph))
        if mode == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif mode == "int8":
            _calibrate_int8(converter, calibration)
        elif mode != "float32":
            raise ValueError(f"unknown TFLite mode {mode!r}; use float32, float16 or int8")
        return converter.convert()


def interpreter_module() -> str:
    """The module whose `Interpreter` opens .tflite files: LiteRT when installed, else TensorFlow's own.

    One answer for this process and the probe's child (same Python, same packages), found without importing it.
    """
    return LITERT_INTERPRETER if importlib.util.find_spec("ai_edge_litert") is not None else TENSORFLOW_INTERPRETER


def interpreter_class() -> type:
    """The TFLite `Interpreter` class of `interpreter_module()`."""
    return importlib.import_module(interpreter_module()).Interpreter


class TFLiteClassifier(Runtime):
    """A `.tflite` classifier run by the TFLite interpreter: float32 RGB [0, 255] in, probabilities out.

    Quantised inputs and outputs (uint8/int8) are (de)quantised here with the scale and zero point the
    converter stored in the file, so callers always see floats.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, model_content: bytes | None = None):
        """`model_content`: the bytes of `path` already read (and probed); otherwise the file is read by TFLite.
        Only pass a file (or bytes) that `probe_tflite` accepted or that this process just converted."""
        import numpy as np

        self.path = Path(path)
        source = {"model_path": str(self.path)} if model_content is None else {"model_content": model_content}
        interpreter = interpreter_class()
        with warnings.catch_warnings():
            # TF 2.20+ warns, on construction, that tf.lite.Interpreter moves to ai-edge-litert: the fallback's
            # known state, not news for the user.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            self.interpreter = interpreter(**source, num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_output_details()
        # A calibrated export has two outputs, in an order the converter picks: the probabilities (B, C) and the
        # class index (B,), -1 for "unknown"; an uncalibrated one only the probabilities.
        self._output = next(o for o in outputs if len(o["shape"]) == 2)
        self._index_output = next((o for o in outputs if len(o["shape"]) == 1), None)
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

    def _quantise(self, images):
        import numpy as np

        if self.input_dtype.kind == "f":
            return images.astype(self.input_dtype)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(self.input_dtype)

    def _dequantise(self, values):
        import numpy as np

        if np.dtype(self._output["dtype"]).kind == "f":
            return values.astype(np.float32)
        scale, zero_point = self._output["quantization"]
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def invoke(self, images):
        """One interpreter call on a batch already at the model's resolution (the batch size sticks)."""
        return self._invoke(images)[0]

    def _invoke(self, images):
        """(probabilities, class index) of one interpreter call; the index is the argmax when the model has none."""
        self._set_batch(len(images))
        self.interpreter.set_tensor(self._input["index"], self._quantise(images))
        self.interpreter.invoke()
        probabilities = self._dequantise(self.interpreter.get_tensor(self._output["index"]))
        if self._index_output is None:
            return probabilities, probabilities.argmax(axis=1)
        return probabilities, self.interpreter.get_tensor(self._index_output["index"]).copy()

    def predict_images(self, images, batch_size: int = 32):
        """Probabilities (N, C) for float32 RGB images (N, R, R, 3) in [0, 255]."""
        return self.classify_images(images, batch_size)[0]

    def classify_images(self, images, batch_size: int = 32):
        """(probabilities (N, C), class index (N,), -1 where a calibrated model rejects the image)."""
        import numpy as np

        step = batch_size if self._dynamic_batch else self._batch
        parts = [self._invoke(images[i : i + step]) for i in range(0, len(images), step)]
        return np.concatenate([p for p, _ in parts], axis=0), np.concatenate([i for _, i in parts], axis=0)


class Int8AccuracyError(ValueError):
    """The int8 export lost more validation accuracy than `--max-int8-drop` allows; nothing was exported."""


def int8_accuracy(labels, float_probabilities, int8_probabilities, class_names) -> dict:
    """float32 against int8 top-1 accuracy on the same labelled images, overall and per class.

    Drops are in percentage points (float32 minus int8; positive: int8 is worse), rounded to 0.01 so that a
    drop of exactly the limit is not refused by a floating-point hair. A class without images has None figures.
    """
    import numpy as np

    labels = np.asarray(labels)
    reference, quantized = np.asarray(float_probabilities), np.asarray(int8_probabilities)
    float_right, int8_right = reference.argmax(1) == labels, quantized.argmax(1) == labels
    per_class: dict[str, dict] = {}
    for index, name in enumerate(class_names):
        mask = labels == index
        count = int(mask.sum())
        if count == 0:
            per_class[name] = {"num_images": 0, "float32_accuracy": None, "int8_accuracy": None, "drop_points": None}
            continue
        float_accuracy, int8_accuracy_ = float(float_right[mask].mean()), float(int8_right[mask].mean())
        per_class[name] = {
            "num_images": count,
            "float32_accuracy": round(float_accuracy, 4),
            "int8_accuracy": round(int8_accuracy_, 4),
            "drop_points": round(100 * (float_accuracy - int8_accuracy_), 2),
        }
    float_accuracy, int8_accuracy_ = float(float_right.mean()), float(int8_right.mean())
    return {
        "num_images": len(labels),
        "float32_accuracy": round(float_accuracy, 4),
        "int8_accuracy": round(int8_accuracy_, 4),
        "accuracy_drop_points": round(100 * (float_accuracy - int8_accuracy_), 2),
        "top1_agreement": round(float((reference.argmax(1) == quantized.argmax(1)).mean()), 4),
        "max_abs_probability_error": round(float(np.abs(reference - quantized).max()), 4),
        "per_class": per_class,
    }


def worst_classes(report: dict, count: int = WORST_CLASSES) -> list[tuple[str, float]]:
    """The (class, drop in points) of the `count` classes int8 hurts most, largest drop first; only real drops."""
    drops = [(name, c["drop_points"]) for name, c in report.get("per_class", {}).items() if (c["drop_points"] or 0) > 0]
    return sorted(drops, key=lambda item: -item[1])[:count]


def int8_gate_refusal(report: dict, max_drop: float, calibration_images: int) -> str | None:
    """Why the int8 export must be refused (`int8_accuracy`'s report against `max_drop` points), or None."""
    options = (
        f"calibrate on more training images (--int8-calibration-images N; this export used {calibration_images}), "
        "export float16 weights instead (--format tflite-fp16), or export anyway (--force)"
    )
    if "accuracy_drop_points" not in report:
        return f"int8 accuracy could not be checked against float32: {report.get('note', 'no figures')}. Options: {options}"
    drop = report["accuracy_drop_points"]
    if drop <= max_drop:
        return None
    worst = ", ".join(f"{name} -{points:.2f}" for name, points in worst_classes(report)) or "none in particular"
    return (
        f"int8 loses {drop:.2f} accuracy points against float32 on the {report['num_images']} {report['split']} "
        f"images ({report['float32_accuracy']:.2%} -> {report['int8_accuracy']:.2%}), more than --max-int8-drop "
        f"{max_drop:g}; the classes that lose most (points): {worst}. Options: {options}"
    )


def quantization_report(run: Run, int8_path: Path, split: str = GATE_SPLIT) -> dict:
    """int8 against the float32 Keras model on the run's `split` images (`int8_accuracy`), or a note why not."""
    from workbench.serving.imaging import load_files

    paths, labels = split_files(run, split)
    if not paths:
        return {"split": split, "note": f"the run's manifest has no {split} images"}
    images = load_files(paths, run.resolution)
    reference = run.model.predict(images, batch_size=32, verbose=0)
    quantized = TFLiteClassifier(int8_path).predict_images(images)
    figures = int8_accuracy(labels, reference, quantized, run.class_names)
    return {"split": split, "reference": "float32 Keras", **figures}


def _is_tflite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(8)[4:8] == TFLITE_IDENTIFIER


def probe_tflite(path: Path, data: bytes) -> None:
    """Open the TFLite model `data` (the bytes of `path`) in a child process; `ModelFileError` unless it loads.

    The child builds the interpreter, allocates tensors and runs the model once on zeros, which is where
    malformed FlatBuffers crash. A crash, a time-out or an error there becomes a message; nothing reaches this
    process. Select-TF ("Flex") ops get their own message: the interpreter here has no Flex delegate.
    """
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{path}: not a TFLite FlatBuffer (no {TFLITE_IDENTIFIER.decode()} identifier)")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, interpreter_module()],
            input=data,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            f"{path}: not a valid TFLite model (opening it did not finish within {PROBE_TIMEOUT} s)"
        ) from None
    lines = child.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        error = json.loads(lines[-1])["error"] if child.returncode == 0 and lines else "no answer"
    except (ValueError, KeyError, TypeError):
        error = "no answer"
    if child.returncode < 0:
        error = f"the TFLite runtime crashed on it (signal {-child.returncode})"
    elif child.returncode != 0:
        error = f"the TFLite runtime failed on it (exit code {child.returncode})"
    if error is None:
        return
    if "Select TensorFlow op" in error or "Flex" in error:
        raise ModelFileError(
            f"{path}: this TFLite model uses Select TensorFlow (Flex) ops, which the TFLite runtime here does "
            "not include; export it with builtin ops only (`workbench export --format tflite`)"
        )
    first = error.strip().splitlines()[0][:300] if error.strip() else "no detail"
    raise ModelFileError(
        f"{path}: not a valid TFLite model ({first}); use a .tflite file written by `workbench export`"
    )


@dataclass(frozen=True)
class TFLiteFormat(ExportFormat):
    """One converter mode (`float32`, `float16` or `int8`); int8 calibrates on the run's training split."""

    mode: str = "float32"
    # int8 only: the calibration set's size and the accuracy gate (`with_int8_gate`).
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    max_int8_drop: float = DEFAULT_MAX_INT8_DROP
    force: bool = False

    def with_int8_gate(
        self, calibration_images: int | None = None, max_drop: float | None = None, force: bool = False
    ) -> TFLiteFormat:
        if self.mode != "int8":
            return super().with_int8_gate(calibration_images, max_drop, force)
        if calibration_images is not None and calibration_images < 1:
            raise ValueError(f"--int8-calibration-images {calibration_images}: give a positive number of images")
        if max_drop is not None and not math.isfinite(max_drop):
            raise ValueError(f"--max-int8-drop {max_drop}: give a finite number of accuracy points, e.g. 1.0")
        return dataclasses.replace(
            self,
            calibration_images=self.calibration_images if calibration_images is None else calibration_images,
            max_int8_drop=self.max_int8_drop if max_drop is None else max_drop,
            force=force,
        )

    def write(self, run, directory: Path) -> dict:
        from pipelines.files import atomic_write_bytes
        from workbench.evaluation.calibrate import read_calibration

        if self.mode == "int8":
            from workbench.serving.multi_label import run_thresholds

            if run_thresholds(run) is not None:
                raise ValueError(
                    f"{run.path} is a multi-label run: the int8 export's accuracy gate measures top-1 accuracy, "
                    "which a multi-label model has none of; export --format tflite or tflite-fp16"
                )
        calibration = representative_images(run, self.calibration_images) if self.mode == "int8" else None
        calibrated = read_calibration(run.path) if self.calibrated_graph else None
        model_path = directory / self.files[0]
        data = convert_tflite(run.model, run.resolution, self.mode, calibration, calibrated=calibrated)
        atomic_write_bytes(model_path, data)
        extra: dict = {"tflite": {"mode": self.mode, "bytes": len(data)}}
        if calibration is not None:
            extra["tflite"]["calibration_images"] = len(calibration)
            extra["quantization"] = self._gate(run, model_path, len(calibration))
        return extra

    def _gate(self, run, model_path: Path, calibration_images: int) -> dict:
        """The int8 accuracy gate: the model card's figures, or `Int8AccuracyError` (raised while the export is
        still a staging folder, so nothing is exported and the previous export stays)."""
        report = quantization_report(run, model_path)
        refusal = int8_gate_refusal(report, self.max_int8_drop, calibration_images)
        if refusal is not None and not self.force:
            raise Int8AccuracyError(f"{run.path}: {refusal}. Nothing was exported.")
        gate = {
            "max_drop_points": self.max_int8_drop,
            "passed": refusal is None,
            "forced": refusal is not None,
            "refusal": refusal,
        }
        return {**report, "calibration_images": calibration_images, "gate": gate}

    def recognise(self, path: Path) -> Path | None:
        return path if path.is_file() and _is_tflite(path) else None

    def verify(self, path: Path) -> None:
        """The identifier check only: vetting a FlatBuffer for real means running the interpreter on it, which
        `open` does, in a child process first (`probe_tflite`)."""
        if not _is_tflite(path):
            raise ModelFileError(f"{path}: not a TFLite FlatBuffer (no {TFLITE_IDENTIFIER.decode()} identifier)")

    def open(self, path: Path) -> TFLiteClassifier:
        # Every file is probed, our own exports too: nothing in a .tflite proves who wrote it. The interpreter
        # here is built from the probed bytes, not the path, so the file cannot change in between.
        data = path.read_bytes()
        probe_tflite(path, data)
        return TFLiteClassifier(path, model_content=data)


TFLITE = TFLiteFormat(
    name="tflite", label="TFLite (float32)", kind="tflite", files=("model.tflite",), calibrated_graph=True
)
TFLITE_FP16 = TFLiteFormat(
    name="tflite-fp16",
    label="TFLite (float16 weights)",
    kind="tflite",
    files=("model.tflite",),
    mode="float16",
    calibrated_graph=True,
)
TFLITE_INT8 = TFLiteFormat(
    name="tflite-int8",
    label="TFLite (int8, calibrated)",
    kind="tflite",
    files=("model.tflite",),
    input="uint8 RGB (B, {size}, {size}, 3) pixel values (input quantisation calibrated to [0, 255])",
    mode="int8",
)
