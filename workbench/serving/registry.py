"""The export formats, as one table: `workbench export --format`, `workbench train --export-format`, the app's
export list, `export()` and `predict` all read it.

Adding a format (ONNX, TF.js) is one module under `workbench/serving/formats/` defining an `ExportFormat`
subclass and its `Runtime`, plus one entry in `EXPORT_FORMATS` below. Importing this module imports no
TensorFlow: the CLI builds its choices from it.
"""

from __future__ import annotations

from workbench.serving.formats.base import ExportFormat
from workbench.serving.formats.keras_file import KERAS
from workbench.serving.formats.onnx import ONNX
from workbench.serving.formats.savedmodel import SAVEDMODEL
from workbench.serving.formats.tflite import TFLITE, TFLITE_FP16, TFLITE_INT8

# In the order the CLI, its errors and the app list them. Within a family (same `kind`) the first one
# opens the family's files for `predict`.
EXPORT_FORMATS: tuple[ExportFormat, ...] = (SAVEDMODEL, KERAS, TFLITE, TFLITE_FP16, TFLITE_INT8, ONNX)
DEFAULT_FORMAT = SAVEDMODEL.name


def format_names() -> tuple[str, ...]:
    """The `--format` values, in registry order."""
    return tuple(fmt.name for fmt in EXPORT_FORMATS)


def get_format(name: str) -> ExportFormat:
    """The registered format called `name`; `ValueError` listing the valid names otherwise."""
    for fmt in EXPORT_FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown export format {name!r}; use one of {', '.join(format_names())}")


def families() -> tuple[ExportFormat, ...]:
    """One format per `kind`, in registry order: the formats `locate_model` asks to recognise a file."""
    seen: dict[str, ExportFormat] = {}
    for fmt in EXPORT_FORMATS:
        seen.setdefault(fmt.kind, fmt)
    return tuple(seen.values())


def describe() -> str:
    """`name: label` of every format, for help texts."""
    return "; ".join(f"{fmt.name}: {fmt.label}" for fmt in EXPORT_FORMATS)
