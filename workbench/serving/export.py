"""Export a trained run in any registered format (`workbench.serving.registry`), with its labels and model card.

Layout (`out` defaults to `saved_models/<run name>`):

    <out>/<version>/            SavedModel, TF Serving layout (versions 1, 2, ... never overwritten)
    <out>/keras/model.keras
    <out>/tflite/model.tflite, <out>/tflite-fp16/model.tflite, <out>/tflite-int8/model.tflite

Every export directory also holds `labels.txt` and `model_card.json` / `model_card.md`. TF Serving only
looks at numeric sub-directories of a model base path, so the non-SavedModel folders never confuse it.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.serving.registry import DEFAULT_FORMAT, get_format

DEFAULT_ROOT = Path("saved_models")


def export(
    run_dir: str | Path, format: str = DEFAULT_FORMAT, out: str | Path | None = None, *, version: int | None = None
) -> Path:
    """Export the run at `run_dir` in `format`; returns the SavedModel version directory or the model file.

    Args:
        run_dir: a run directory (`model.keras`, `labels.txt`, `config.yaml`, `manifest.json`).
        format: a registered format name (`workbench.serving.registry.format_names()`).
        out: the export base directory, `saved_models/<run name>` by default.
        version: SavedModel version number; default the next free one (existing versions are never overwritten).
    """
    from pipelines.files import atomic_directory
    from workbench.serving.model_files import open_run

    fmt = get_format(format)
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
        directory.mkdir(parents=True, exist_ok=True)
        _write(fmt, run, directory, name)
    return fmt.model_path(directory)


def _write(fmt, run, directory: Path, name: str) -> None:
    """The model files, then labels.txt and the model card beside them."""
    from pipelines.files import atomic_write_text
    from workbench.serving.model_card import build_card, write_card

    extra = fmt.write(run, directory)
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
