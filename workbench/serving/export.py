"""Export a trained run in any registered format (`workbench.serving.registry`), with its labels and model card.

Layout (`out` defaults to `saved_models/<run name>`):

    <out>/<version>/            SavedModel, TF Serving layout (versions 1, 2, ... never overwritten)
    <out>/keras/model.keras
    <out>/tflite/model.tflite, <out>/tflite-fp16/model.tflite, <out>/tflite-int8/model.tflite

Every export directory also holds `labels.txt` and `model_card.json` / `model_card.md`, written with the model
into one staging folder that appears whole (the labels beside a model always belong to it). A SavedModel
version is never replaced. The other folders hold the latest export; re-exporting swaps the new folder in
and keeps the one it replaces as `<out>/<name>.previous/` (one generation: the export before that is
deleted). TF Serving only looks at numeric sub-directories of a model base path, so the other folders
never confuse it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from workbench.serving.registry import DEFAULT_FORMAT, get_format

DEFAULT_ROOT = Path("saved_models")
PREVIOUS_SUFFIX = ".previous"  # `<out>/keras.previous/`: the export a re-export replaced


def export(
    run_dir: str | Path,
    format: str = DEFAULT_FORMAT,
    out: str | Path | None = None,
    *,
    version: int | None = None,
    tta: bool = False,
    int8_calibration_images: int | None = None,
    max_int8_drop: float | None = None,
    force: bool = False,
) -> Path:
    """Export the run at `run_dir` in `format`; returns the SavedModel version directory or the model file.

    Args:
        run_dir: a run directory (`model.keras`, `labels.txt`, `config.yaml`, `manifest.json`).
        format: a registered format name (`workbench.serving.registry.format_names()`).
        out: the export base directory, `saved_models/<run name>` by default.
        version: SavedModel version number; default the next free one (existing versions are never overwritten).
        tta: also write signatures that average over the image and its mirror (`savedmodel.TTA_SIGNATURES`);
            `serving_default` is unchanged and stays the default. SavedModel only: other formats refuse.
        int8_calibration_images: tflite-int8 only: training images that calibrate the ranges (None: the default,
            `tflite.DEFAULT_CALIBRATION_IMAGES`).
        max_int8_drop: tflite-int8 only: the most validation accuracy (points) int8 may lose against float32;
            more raises `Int8AccuracyError` (a ValueError) and nothing is exported. None: `DEFAULT_MAX_INT8_DROP`.
        force: tflite-int8 only: export even when the drop exceeds the limit (the model card says so).
    """
    from pipelines.files import atomic_directory
    from workbench.serving.model_files import open_run

    fmt = get_format(format)
    if tta:
        fmt = fmt.with_tta()  # a format without room for it refuses here, before anything is loaded
    if int8_calibration_images is not None or max_int8_drop is not None or force:
        fmt = fmt.with_int8_gate(int8_calibration_images, max_int8_drop, force)  # the others refuse, at once
    base = Path(out) if out is not None else DEFAULT_ROOT / Path(run_dir).resolve().name
    directory = fmt.destination(base, version)  # before the (slow) model load: a refused export fails at once
    run = open_run(run_dir)
    base.mkdir(parents=True, exist_ok=True)
    name = base.resolve().name
    if fmt.versioned:
        # A version directory appears complete or not at all: TF Serving may be polling the base path.
        with atomic_directory(directory) as staging:
            _write(fmt, run, staging, name)
    else:
        _replace_folder(directory, lambda staging: _write(fmt, run, staging, name))
    return fmt.model_path(directory)


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive `flock` on `directory` (the export base): exports of one base swap folders one at a time,
    whether they are processes or the app's sessions (threads of one process; flock locks per open file)."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _replace_folder(directory: Path, write) -> None:
    """`write(staging)` the whole export, then swap it in as `directory`, keeping the old one as a backup.

    Model, labels.txt and model card are staged together (`atomic_directory`: unique name, umask modes),
    so a kill at any point leaves each folder complete: the old export, or the new one.
    """
    import secrets
    import shutil

    from pipelines.files import atomic_directory

    staged = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}.staged")
    previous = directory.with_name(directory.name + PREVIOUS_SUFFIX)
    try:
        with atomic_directory(staged) as staging:
            write(staging)
        with _locked(directory.parent):
            if directory.exists():
                shutil.rmtree(previous, ignore_errors=True)
                os.rename(directory, previous)
            os.rename(staged, directory)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _write(fmt, run, directory: Path, name: str) -> None:
    """The model files, then labels.txt and the model card beside them (into a staging folder)."""
    from pipelines.files import atomic_write_text
    from workbench.evaluation.calibrate import read_calibration
    from workbench.serving.model_card import build_card, write_card
    from workbench.serving.multi_label import multi_label_card

    extra = fmt.write(run, directory)
    calibration = read_calibration(run.path)
    # One entry for every format: what the graph applies, or (.keras, int8) what `workbench predict` applies.
    if calibration is not None:
        extra = {**extra, "calibration": {**calibration.to_card(), "in_graph": fmt.calibrated_graph}}
    else:
        extra = {**extra, "calibration": None}
    if (multi_label := multi_label_card(run, fmt)) is not None:
        extra = {**extra, "multi_label": multi_label}
    atomic_write_text(directory / "labels.txt", "\n".join(run.class_names) + "\n")
    card = build_card(
        run,
        name=name,
        format=fmt.name,
        input=fmt.describe_input(run.resolution),
        files=[*fmt.files, "labels.txt"],
        extra=extra,
    )
    write_card(directory, card)


def read_card(directory: str | Path) -> dict:
    """The model card beside an export."""
    return json.loads((Path(directory) / "model_card.json").read_text(encoding="utf-8"))
