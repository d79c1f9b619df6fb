"""Export a trained run: TF Serving SavedModel, `.keras`, and TFLite float32 / float16 / full-integer int8.

Layout (`out` defaults to `saved_models/<run name>`):

    <out>/<version>/            SavedModel, TF Serving layout (versions 1, 2, ... never overwritten)
    <out>/keras/model.keras
    <out>/tflite/model.tflite, <out>/tflite-fp16/model.tflite, <out>/tflite-int8/model.tflite

Every export directory also holds `labels.txt` and `model_card.json` / `model_card.md`. TF Serving only
looks at numeric sub-directories of a model base path, so the non-SavedModel folders never confuse it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from workbench.serving.model_card import build_card, write_card, write_text_atomic
from workbench.serving.model_files import Run, open_run

FORMATS = ("savedmodel", "keras", "tflite", "tflite-fp16", "tflite-int8")
DEFAULT_ROOT = Path("saved_models")
# Images of the training split used to calibrate int8 ranges; a few hundred is the TFLite guidance.
REPRESENTATIVE_IMAGES = 200

SIGNATURES = {
    "serving_default": "image_bytes: string (B,) of encoded JPEG/PNG/GIF/BMP → probabilities float32 (B, C), "
    "class_index int32 (B,), class_name string (B,); decoded and resized inside the graph",
    "serving_rgb": "images: float32 (B, H, W, 3) RGB in [0, 255], any H and W → the same outputs; "
    "resized inside the graph",
}


def _next_version(base: Path) -> int:
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


def _classify_fn(model, class_names: list[str]):
    import tensorflow as tf

    def classify(images):
        probabilities = model(images, training=False)
        index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        names = tf.constant(class_names)
        return {"probabilities": probabilities, "class_index": index, "class_name": tf.gather(names, index)}

    return classify


def write_saved_model(model, class_names: list[str], resolution: int, directory: Path) -> Path:
    """Write a SavedModel with the two serving signatures of `SIGNATURES` into `directory`.

    The input name `image_bytes` ends in `_bytes` on purpose: TF Serving's REST API then accepts
    `{"b64": "..."}` JSON values for it.
    """
    import tensorflow as tf
    from keras.export import ExportArchive

    from workbench.serving.imaging import decode_batch, resize_images

    classify = _classify_fn(model, class_names)
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda image_bytes: classify(decode_batch(image_bytes, resolution)),
        input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "serving_rgb",
        lambda images: classify(resize_images(images, resolution)),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="images")],
    )
    archive.write_out(str(directory), verbose=False)
    return directory


def _float_graph(model, resolution: int, directory: Path) -> Path:
    """A plain SavedModel (float32 images at the model's resolution → probabilities) for the TFLite converter."""
    import tensorflow as tf
    from keras.export import ExportArchive

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, resolution, resolution, 3), tf.float32, name="images")],
    )
    archive.write_out(str(directory), verbose=False)
    return directory


def split_files(run: Run, split: str, limit: int | None = None) -> tuple[list[str], list[int]]:
    """File paths (the decodable copies) and label indices of one split of the run's manifest."""
    if run.manifest_path is None:
        return [], []
    from pipelines.manifest import Manifest

    manifest = Manifest.load(run.manifest_path)
    index = {name: i for i, name in enumerate(run.class_names)}
    records = manifest.split_records(split)
    if limit is not None and len(records) > limit:
        # An evenly spaced subset keeps every class represented (records are grouped by class).
        step = len(records) / limit
        records = [records[int(i * step)] for i in range(limit)]
    return [r.source_path for r in records], [index[r.label] for r in records]


def representative_images(run: Run, limit: int = REPRESENTATIVE_IMAGES):
    """Training-split images (float32 [0, 255] at the run's resolution) for int8 calibration."""
    from workbench.serving.imaging import load_files

    paths, _ = split_files(run, "train", limit)
    if not paths:
        raise ValueError(
            f"{run.path}: int8 export needs training images for calibration, but the run has no manifest.json "
            "with a train split; export a run trained by `workbench train`, or use --format tflite-fp16"
        )
    return load_files(paths, run.resolution)


def convert_tflite(model, resolution: int, mode: str, calibration=None) -> bytes:
    """Convert to a TFLite flatbuffer. `mode`: float32 | float16 | int8 (needs `calibration` images).

    int8 is full-integer: every op, the input (uint8 pixels, which RGB in [0, 255] maps onto exactly)
    and the output (uint8 probabilities) are quantised, as integer-only accelerators require.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(_float_graph(model, resolution, Path(tmp) / "float")))
        if mode == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif mode == "int8":
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
        elif mode != "float32":
            raise ValueError(f"unknown TFLite mode {mode!r}; use float32, float16 or int8")
        return converter.convert()


def quantization_report(run: Run, int8_path: Path, float_path: Path | None = None) -> dict:
    """int8 against float32 on the same evaluation images (the test split, else val).

    The float32 reference is the Keras model itself (or `float_path`, a float32 .tflite, when given).
    """
    import numpy as np

    from workbench.serving.imaging import load_files
    from workbench.serving.predict import TFLiteClassifier

    for split in ("test", "val"):
        paths, labels = split_files(run, split)
        if paths:
            break
    else:
        return {"note": "no test or val split in the run's manifest; accuracy not measured"}
    images = load_files(paths, run.resolution)
    labels = np.asarray(labels)
    if float_path is not None:
        reference = TFLiteClassifier(float_path).predict_images(images)
        reference_name = "float32 TFLite"
    else:
        reference = run.model.predict(images, batch_size=32, verbose=0)
        reference_name = "float32 Keras"
    quantized = TFLiteClassifier(int8_path).predict_images(images)
    float_accuracy = float((reference.argmax(1) == labels).mean())
    int8_accuracy = float((quantized.argmax(1) == labels).mean())
    return {
        "split": split,
        "num_images": len(labels),
        "reference": reference_name,
        "float32_accuracy": round(float_accuracy, 4),
        "int8_accuracy": round(int8_accuracy, 4),
        "accuracy_drop_points": round(100 * (float_accuracy - int8_accuracy), 2),
        "top1_agreement": round(float((reference.argmax(1) == quantized.argmax(1)).mean()), 4),
        "max_abs_probability_error": round(float(np.abs(reference - quantized).max()), 4),
    }


def export(
    run_dir: str | Path, format: str = "savedmodel", out: str | Path | None = None, *, version: int | None = None
) -> Path:
    """Export the run at `run_dir` in `format`; returns the SavedModel version directory or the model file.

    Args:
        run_dir: a run directory (`model.keras`, `labels.txt`, `config.yaml`, `manifest.json`).
        format: one of `FORMATS`.
        out: the export base directory, `saved_models/<run name>` by default.
        version: SavedModel version number; default the next free one (existing versions are never overwritten).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    base = Path(out) if out is not None else DEFAULT_ROOT / Path(run_dir).resolve().name
    if format == "savedmodel":
        # Checked before the (slow) model load: a refused export should fail at once.
        version = _next_version(base) if version is None else int(version)
        target = base / str(version)
        if target.exists():
            raise FileExistsError(f"{target} already exists; TF Serving versions are immutable, pick another --version")
    run = open_run(run_dir)
    base.mkdir(parents=True, exist_ok=True)
    name = base.resolve().name
    extra: dict = {}

    if format == "savedmodel":
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
        try:
            write_saved_model(run.model, run.class_names, run.resolution, staging)
            _write_beside(run, staging, name, format, ["saved_model.pb", "variables/"], {"signatures": SIGNATURES})
            # A version directory appears complete or not at all: TF Serving may be polling the base path.
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    directory = base / format
    directory.mkdir(parents=True, exist_ok=True)
    if format == "keras":
        model_path = directory / "model.keras"
        tmp = directory / f".model.{os.getpid()}.keras"
        run.model.save(tmp)
        os.replace(tmp, model_path)
    else:
        mode = {"tflite": "float32", "tflite-fp16": "float16", "tflite-int8": "int8"}[format]
        calibration = representative_images(run) if mode == "int8" else None
        model_path = directory / "model.tflite"
        data = convert_tflite(run.model, run.resolution, mode, calibration)
        tmp = directory / f".model.{os.getpid()}.tflite"
        tmp.write_bytes(data)
        os.replace(tmp, model_path)
        extra["tflite"] = {"mode": mode, "bytes": len(data)}
        if mode == "int8":
            extra["tflite"]["calibration_images"] = len(calibration)
            extra["quantization"] = quantization_report(run, model_path)
    _write_beside(run, directory, name, format, [model_path.name], extra)
    return model_path


def _write_beside(run: Run, directory: Path, name: str, format: str, files: list[str], extra: dict) -> None:
    """labels.txt and the model card, beside the exported model."""
    write_text_atomic(directory / "labels.txt", "\n".join(run.class_names) + "\n")
    write_card(directory, build_card(run, name=name, format=format, files=[*files, "labels.txt"], extra=extra))


def read_card(directory: str | Path) -> dict:
    """The model card beside an export."""
    return json.loads((Path(directory) / "model_card.json").read_text(encoding="utf-8"))
