"""Recognise and safely open the model files workbench writes: run directories, `.keras`, SavedModel, TFLite.

A model file is a program: a `.keras` archive can carry Python bytecode (a `Lambda` layer) or name any
importable class, and a pickle runs code on load. So every file is identified by its content first and
inspected before anything is deserialised; what is not ours, or not safe, is refused with a
`ModelFileError` that says why and what to do, and is never executed.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

TFLITE_IDENTIFIER = b"TFL3"  # FlatBuffer file identifier of every .tflite model, at byte offset 4
# Layers that carry arbitrary Python code in their config.
_CODE_LAYERS = {"Lambda", "TFOpLambda"}


class ModelFileError(ValueError):
    """A model path that is missing, of an unknown kind, not written by workbench, or unsafe to load."""


@dataclass(frozen=True)
class ModelLocation:
    """Where a model lives and in what format.

    `kind` is one of `run` (a run directory), `keras`, `savedmodel` (a version directory) or `tflite`;
    `path` is the model itself (the `.keras` file for a run) and `labels_path` its `labels.txt`.
    """

    kind: str
    path: Path
    labels_path: Path


def read_labels(path: Path) -> list[str]:
    """The class names of `labels.txt`, one per line in index order."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: labels file not found; every workbench model has a labels.txt beside it "
            "(re-export the run with `workbench export`)"
        )
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ModelFileError(f"{path}: labels file is empty; expected one class name per line")
    return labels


def _latest_version(base: Path) -> Path | None:
    versions = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def locate_model(path: str | Path) -> ModelLocation:
    """Identify the model at `path` by its content, or raise `ModelFileError` saying what was expected.

    Accepted: a run directory (`model.keras` + `labels.txt`), a SavedModel version directory or its
    TF Serving base directory (the highest numeric version is used), a `.keras` archive, a `.tflite` file.
    """
    path = Path(path)
    expected = (
        "expected a run directory (runs/<id>/), a SavedModel directory (saved_models/<name>/ or "
        "saved_models/<name>/<version>/), a .keras file or a .tflite file written by `workbench export`"
    )
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or directory; {expected}")
    if path.is_dir():
        if (path / "model.keras").is_file():
            return ModelLocation("run", path / "model.keras", path / "labels.txt")
        if (path / "saved_model.pb").is_file():
            return ModelLocation("savedmodel", path, path / "labels.txt")
        latest = _latest_version(path)
        if latest is not None:
            return ModelLocation("savedmodel", latest, latest / "labels.txt")
        raise ModelFileError(f"{path}: directory holds no model.keras, saved_model.pb or numeric version; {expected}")
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[4:8] == TFLITE_IDENTIFIER:
        return ModelLocation("tflite", path, path.parent / "labels.txt")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "config.json" in archive.namelist():
                return ModelLocation("keras", path, path.parent / "labels.txt")
    raise ModelFileError(
        f"{path}: not a model file workbench can load (its content is neither a Keras v3 archive nor "
        f"TFLite; pickles and HDF5 files are never loaded because loading them can run code); {expected}"
    )


def _unsafe_entries(node, trail: str = "model") -> list[str]:
    """Where a Keras config tree names non-Keras code or a code-carrying layer (as `layer/...` trails)."""
    problems: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("name"), str):
            trail = f"{trail}/{node['name']}"
        class_name = node.get("class_name")
        module = node.get("module")
        if class_name in _CODE_LAYERS or class_name == "__lambda__":
            problems.append(f"{trail}: {class_name} (carries Python code)")
        if isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
            problems.append(f"{trail}: class {class_name!r} from module {module!r} (not Keras)")
        registered = node.get("registered_name")
        if isinstance(registered, str) and registered and registered != class_name:
            problems.append(f"{trail}: custom registered object {registered!r}")
        for value in node.values():
            problems.extend(_unsafe_entries(value, trail))
    elif isinstance(node, list):
        for item in node:
            problems.extend(_unsafe_entries(item, trail))
    return problems


def inspect_keras_archive(path: str | Path) -> dict:
    """Read and vet the config of a `.keras` archive without deserialising anything.

    Returns the parsed config. Raises `ModelFileError` if the archive is not a Keras v3 archive, uses
    code-carrying or non-Keras classes, or is not a workbench image classifier (a functional model
    taking (H, W, 3) images whose last layer is the `predictions` head).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(
            f"{path}: not a Keras v3 .keras archive ({error}); "
            "export the model again with `workbench export --format keras`"
        ) from None
    problems = _unsafe_entries(config)
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelFileError(
            f"{path}: refusing to load this model: it contains code or classes outside Keras ({listed}). "
            "workbench only loads models made of built-in Keras layers; rebuild it with workbench "
            "or load it yourself with keras.saving.load_model(..., safe_mode=False) if you trust its author"
        )
    layers = config.get("config", {}).get("layers", []) if isinstance(config, dict) else []
    names = [layer.get("name") or layer.get("config", {}).get("name") for layer in layers]
    if config.get("class_name") != "Functional" or "predictions" not in names:
        raise ModelFileError(
            f"{path}: not a workbench image classifier (expected a functional model whose output layer is "
            "named 'predictions'); train it with `workbench train` or build it with workbench.models.build_model"
        )
    return config


# Ops that touch the file system beyond the SavedModel's own variables, or call back into Python: a
# workbench export never contains them, and a graph that does is a program we will not run.
_FORBIDDEN_OPS = {
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "PyFunc",
    "PyFuncStateless",
    "EagerPyFunc",
    "ImmutableConst",
    "LoadAndRemapMatrix",
    "DecodeProtoV2",
    "EncodeProto",
    "Save",
    "SaveSlices",
    "Restore",
    "RestoreSlice",
}
_DT_STRING = 7  # tensorflow.core.framework.types_pb2.DT_STRING


def inspect_saved_model(directory: str | Path) -> None:
    """Vet a SavedModel from its protobuf alone (parsing runs nothing) before `tf.saved_model.load`.

    Raises `ModelFileError` unless its `serving_default` signature takes `image_bytes` strings (the
    workbench export) and its graph is free of file-system and Python-callback ops.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    directory = Path(directory)
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
    except Exception as error:
        raise ModelFileError(f"{directory}: saved_model.pb is not a valid SavedModel ({error})") from None
    if not saved_model.meta_graphs:
        raise ModelFileError(f"{directory}: the SavedModel holds no graph")
    graph = saved_model.meta_graphs[0]
    signature = graph.signature_def.get("serving_default")
    inputs = {} if signature is None else signature.inputs
    if "image_bytes" not in inputs or inputs["image_bytes"].dtype != _DT_STRING:
        raise ModelFileError(
            f"{directory}: not a workbench SavedModel (its serving_default signature does not take "
            "'image_bytes' strings); export the run with `workbench export --format savedmodel`"
        )
    ops = {node.op for node in graph.graph_def.node}
    for function in graph.graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    forbidden = sorted(ops & _FORBIDDEN_OPS)
    if forbidden:
        raise ModelFileError(
            f"{directory}: refusing to load this SavedModel: its graph uses {', '.join(forbidden)} (file access or "
            "Python callbacks), which a workbench export never contains; export the run again"
        )


def load_keras_model(path: str | Path):
    """Load a vetted `.keras` archive with `safe_mode=True` and without its optimizer state."""
    import keras

    inspect_keras_archive(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise ModelFileError(f"{path}: Keras could not load this model safely: {error}") from None


def model_resolution(model) -> int | None:
    """Square input resolution (pixels) of a Keras image model, or None when its input size is free."""
    shape = model.input_shape
    height, width = shape[1], shape[2]
    return int(height) if height is not None and height == width else None


@dataclass
class Run:
    """What a run directory holds, as the evaluation and export code needs it.

    `config` is the parsed `config.yaml` (empty when absent), `manifest_path` the run's `manifest.json`
    (None when absent) and `resolution` the square input size in pixels the model was trained at.
    """

    path: Path
    model: object
    class_names: list[str]
    resolution: int
    config: dict
    manifest_path: Path | None

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def variant(self) -> str | None:
        return self.config.get("variant")


def open_run(run_dir: str | Path) -> Run:
    """Open a run directory (`model.keras`, `labels.txt`, optional `config.yaml` and `manifest.json`)."""
    import yaml

    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise ModelFileError(
            f"{run_dir}: not a finished run directory (no model.keras); pass runs/<id>/ of a run that "
            "completed `workbench train`"
        )
    model = load_keras_model(run_dir / "model.keras")
    class_names = read_labels(run_dir / "labels.txt")
    num_outputs = int(model.output_shape[-1])
    if num_outputs != len(class_names):
        raise ModelFileError(
            f"{run_dir}: labels.txt lists {len(class_names)} classes but the model predicts {num_outputs}; "
            "the run directory is inconsistent, train it again"
        )
    config: dict = {}
    if (run_dir / "config.yaml").is_file():
        loaded = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    resolution = model_resolution(model) or config.get("image_size")
    if resolution is None and config.get("variant"):
        from workbench.models import get_variant

        resolution = get_variant(config["variant"]).resolution
    if resolution is None:
        raise ModelFileError(
            f"{run_dir}: cannot tell the input resolution (the model takes any size and config.yaml has no "
            "image_size or variant); add image_size to config.yaml"
        )
    manifest_path = run_dir / "manifest.json"
    return Run(run_dir, model, class_names, int(resolution), config, manifest_path if manifest_path.is_file() else None)
