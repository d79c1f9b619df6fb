"""Classify image files with any model workbench exports: a run directory, `.keras`, SavedModel or `.tflite`.

Every format gets the same pixels, the ones training saw: files are decoded (EXIF orientation, alpha over white,
first GIF frame, the ingest pixel limit) and resized by `workbench.serving.imaging` (the SavedModel does the same
inside its graph). A model is located by its content (`workbench.serving.model_files`), then
opened by its registered export format, which refuses anything that is not ours or not safe before loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.evaluation.rejection import UNKNOWN_INDEX, UNKNOWN_NAME
from workbench.serving.model_files import ModelFileError, ModelLocation, locate_model, read_labels

if TYPE_CHECKING:
    from workbench.serving.formats.base import Runtime


def _read_images(paths: Sequence[str | Path]) -> list[bytes]:
    """The bytes of each file, each checked to decode as an image within the pixel limit (errors name the file).

    The header's size is checked before anything is decoded: a decompression bomb is refused, not decoded.
    """
    import tensorflow as tf

    from workbench.serving.imaging import decode_rgb, read_image_file, undecodable

    if not paths:
        raise ValueError("no images given; pass one or more image files (JPEG, PNG, GIF, BMP or WebP)")
    encoded = []
    for path in paths:
        data = read_image_file(path)
        try:
            decode_rgb(tf.constant(data))
        except (tf.errors.InvalidArgumentError, ValueError):
            raise undecodable(str(path)) from None
        encoded.append(data)
    return encoded


def open_model(location: ModelLocation) -> tuple[Runtime, list[str]]:
    """The located model, vetted and loaded by its registered format, and its class names."""
    from workbench.serving.registry import get_format

    return get_format(location.format).open(location.path), read_labels(location.labels_path)


def predict(model_path: str | Path, images: Sequence[str | Path], top_k: int = 5, tta: str | None = None) -> list[dict]:
    """Top-k classes of each image file.

    Returns one dict per image, in order: `{"image": path, "class_name", "class_index", "predictions":
    [{"class", "index", "probability"}, ...]}` with the k most probable classes first. A multi-label model's
    results also hold `labels`: every label at or over its threshold (`{"class", "index", "probability",
    "threshold"}`, most probable first; maybe none), and `class_name` is then just the most probable label. `class_name` is the
    answer: the top class, or "unknown" (`class_index` -1) when a calibrated model rejects the image; the
    probabilities are then the calibrated ones (`workbench.evaluation.calibrate`). `tta` (`flip` or `crops`, see
    `workbench.evaluation.tta`) averages the probabilities over augmented views of each image.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    location = locate_model(model_path)  # a wrong model path fails before the images are read
    encoded = _read_images(images)
    runtime, labels = open_model(location)
    if tta is None:
        probabilities, indices = runtime.classify_bytes(encoded)
    else:  # the views' mean (calibrated) probabilities; not rejected (README, "Calibration and rejection")
        probabilities = _tta_probabilities(runtime, encoded, location, tta)
        indices = probabilities.argmax(axis=1)
    check_labels(probabilities.shape[1], labels, location)
    results = [
        {**answer(int(index), labels), "image": str(path), "predictions": top_k_predictions(row, labels, top_k)}
        for path, row, index in zip(images, probabilities, indices, strict=True)
    ]
    from workbench.serving.multi_label import labels_over, thresholds_beside

    thresholds = thresholds_beside(location.labels_path, labels)
    if thresholds is not None:  # a multi-label model: every label over its threshold is an answer
        for result, row in zip(results, probabilities, strict=True):
            result["labels"] = labels_over(row, thresholds, labels)
    return results


def check_labels(num_outputs: int, labels: list[str], location: ModelLocation) -> None:
    """Refuse a labels.txt that does not match the model's output width (`ModelFileError`)."""
    if num_outputs != len(labels):
        raise ModelFileError(
            f"{location.labels_path}: lists {len(labels)} classes but the model predicts {num_outputs}; "
            "the labels.txt does not belong to this model"
        )


def answer(index: int, labels: Sequence[str]) -> dict:
    """`{"class_name", "class_index"}` of a model's answer: a class, or "unknown" (-1) when it rejected the image."""
    return {"class_name": UNKNOWN_NAME if index == UNKNOWN_INDEX else labels[index], "class_index": index}


def top_k_predictions(row: np.ndarray, labels: Sequence[str], top_k: int) -> list[dict]:
    """The `top_k` most probable classes of one probability row, most probable first (ties: lower index first):
    `[{"class", "index", "probability"}, ...]`, the entries of `predict`'s results and of `workbench serve`."""
    order = np.argsort(-row, kind="stable")[:top_k]
    return [{"class": labels[i], "index": int(i), "probability": float(row[i])} for i in order]


def _tta_probabilities(runtime: Runtime, encoded: list[bytes], location: ModelLocation, mode: str) -> np.ndarray:
    """Decode at the model's resolution (a SavedModel's is in its model card), then average over the TTA views."""
    import tensorflow as tf

    from workbench.evaluation.tta import check_mode, tta_predict
    from workbench.serving.imaging import decode_batch

    check_mode(mode)
    size = runtime.resolution or _card_resolution(location)
    pixels = decode_batch(tf.constant(encoded), size).numpy()
    return tta_predict(runtime.predict_images, pixels, mode)


def _card_resolution(location: ModelLocation) -> int:
    import json

    card = Path(location.labels_path).parent / "model_card.json"
    try:
        return int(json.loads(card.read_text(encoding="utf-8"))["model"]["resolution"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelFileError(
            f"{card}: test-time augmentation needs the model's input resolution from its model card, which is "
            "missing or unreadable; predict without --tta, or re-export the run"
        ) from None


def format_table(results: list[dict]) -> str:
    """The predictions as a plain-text table: one block per image, one row per class.

    Class names and paths come from files (a model's labels.txt, folder names), so control characters in
    them are escaped (`workbench.terminal.printable`): the table is printed on a terminal.
    """
    from workbench.terminal import printable

    lines = []
    for result in results:
        rejected = result.get("class_index") == UNKNOWN_INDEX
        lines.append(
            printable(result["image"]) + (f"  → {UNKNOWN_NAME} (below the rejection threshold)" if rejected else "")
        )
        if "labels" in result:  # multi-label: the answer is every label over its threshold
            over = [
                f"{printable(p['class'])} {p['probability']:.2%} (≥ {p['threshold']:.3f})" for p in result["labels"]
            ]
            lines.append("  labels over their thresholds: " + (", ".join(over) if over else "none"))
        names = [printable(p["class"]) for p in result["predictions"]]
        width = max(len(name) for name in names)
        for rank, (name, p) in enumerate(zip(names, result["predictions"], strict=True), 1):
            lines.append(f"  {rank:>2}. {name:<{width}}  {p['probability']:7.2%}")
    return "\n".join(lines)
