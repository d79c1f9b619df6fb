"""Recognise and safely open the model files workbench writes: run directories, `.keras`, SavedModel, TFLite.

A model file is a program: a `.keras` archive can carry Python bytecode (a `Lambda` layer) or name any
importable class, and a pickle runs code on load. So every file is identified by its content first and
inspected before anything is deserialised; what is not ours, or not safe, is refused with a
`ModelFileError` that says why and what to do, and is never executed.

Each export format recognises and vets its own files (`workbench.serving.formats`); this module holds
what they share: the error, `locate_model`, and the run directory with its Keras archive (the model every
export starts from).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The classes a `.keras` config may name: an ALLOWLIST of (module, class_name), so what loads no longer depends on
# which classes the installed Keras deserialises in safe mode (hardening report A3: Keras 3.10 loads `TFSMLayer`,
# which runs an external SavedModel). Source: every class in the config.json of models that
# `workbench.models.build_model` builds, B-type (swish, squeeze-and-excitation, residual Add), Lite-type (ReLU6)
# and mixed precision, saved by Keras 3.15; tests/test_hostile_models.py re-collects them from fresh models and
# fails when a builder or Keras change brings a class not listed here. Add a class only after that test names it.
KERAS_CLASSES = frozenset(
    {
        (None, "__keras_tensor__"),  # a reference to another layer's output, resolved by Keras, never imported
        ("keras", "DTypePolicy"),
        ("keras.src.models.functional", "Functional"),
        ("keras.initializers", "Ones"),
        ("keras.initializers", "VarianceScaling"),
        ("keras.initializers", "Zeros"),
        *(
            ("keras.layers", name)
            for name in (
                "Activation", "Add", "BatchNormalization", "Conv2D", "Dense", "DepthwiseConv2D", "Dropout",
                "GlobalAveragePooling2D", "InputLayer", "Multiply", "Normalization", "Reshape", "ZeroPadding2D",
            )
        ),
    }
)  # fmt: skip
# Named in the refusal because they are what an attacker reaches for first.
_CODE_CLASSES = {
    "Lambda": "carries Python code",
    "TFOpLambda": "carries Python code",
    "__lambda__": "carries Python code",
    "TFSMLayer": "runs an external SavedModel that is never vetted",
}
# config.json limits, checked before it is parsed (report A5 and D: a 3 GB config.json took 10 GB of memory, a
# 100k-levels-deep one raised RecursionError). The largest variant's config (B7, 815 layers) is about 0.8 MB and
# 11 levels deep; the limits leave room for that and refuse what no builder writes.
CONFIG_MAX_BYTES = 16 * 1024 * 1024
CONFIG_MAX_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


class ModelFileError(ValueError):
    """A model path that is missing, of an unknown kind, not written by workbench, or unsafe to load."""


@dataclass(frozen=True)
class ModelLocation:
    """Where a model lives and in what format.

    `kind` is `run` (a run directory) or the `kind` of the export format whose files these are
    (`keras`, `savedmodel` (a version directory), `tflite`); `path` is the model itself (the `.keras`
    file for a run) and `labels_path` its `labels.txt`. `format` names the registered export format
    that opens it (`keras` for a run).
    """

    kind: str
    path: Path
    labels_path: Path
    format: str


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


def locate_model(path: str | Path) -> ModelLocation:
    """Identify the model at `path` by its content, or raise `ModelFileError` saying what was expected.

    Accepted: a run directory (`model.keras` + `labels.txt`), then whatever a registered export format
    recognises: a SavedModel version directory or its TF Serving base directory (the highest numeric
    version is used), a `.keras` archive, a `.tflite` file.
    """
    from workbench.serving.registry import families

    path = Path(path)
    expected = (
        "expected a run directory (runs/<id>/), a SavedModel directory (saved_models/<name>/ or "
        "saved_models/<name>/<version>/), a .keras, .tflite or .onnx file written by `workbench export`"
    )
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or directory; {expected}")
    if path.is_dir() and (path / "model.keras").is_file():
        return ModelLocation("run", path / "model.keras", path / "labels.txt", "keras")
    for fmt in families():
        found = fmt.recognise(path)
        if found is not None:
            labels = found / "labels.txt" if found.is_dir() else found.parent / "labels.txt"
            return ModelLocation(fmt.kind, found, labels, fmt.name)
    if path.is_dir():
        raise ModelFileError(f"{path}: directory holds no model.keras, saved_model.pb or numeric version; {expected}")
    raise ModelFileError(
        f"{path}: not a model file workbench can load (its content is neither a Keras v3 archive, TFLite nor "
        f"ONNX; pickles and HDF5 files are never loaded because loading them can run code); {expected}"
    )


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text `raw` (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if match.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def config_classes(node) -> set[tuple[str | None, str]]:
    """Every (module, class_name) a Keras config tree names: what `KERAS_CLASSES` is checked against."""
    found: set[tuple[str | None, str]] = set()
    if isinstance(node, dict):
        if "class_name" in node:
            found.add((node.get("module"), node["class_name"]))
        for value in node.values():
            found |= config_classes(value)
    elif isinstance(node, list):
        for item in node:
            found |= config_classes(item)
    return found


def _unsafe_entries(node, allowed: frozenset | None, trail: str = "model") -> list[str]:
    """Where a Keras config tree names a class outside `allowed` (any `keras.*` class when None), as
    `layer/...` trails; code-carrying and non-Keras classes are listed first."""
    severe: list[str] = []
    other: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("name"), str):
            trail = f"{trail}/{node['name']}"
        class_name = node.get("class_name")
        module = node.get("module")
        if class_name in _CODE_CLASSES:
            severe.append(f"{trail}: {class_name} ({_CODE_CLASSES[class_name]})")
        elif isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
            severe.append(f"{trail}: class {class_name!r} from module {module!r} (not Keras)")
        elif "class_name" in node and allowed is not None and (module, class_name) not in allowed:
            other.append(f"{trail}: {module}.{class_name} (not a class workbench models are built from)")
        registered = node.get("registered_name")
        if isinstance(registered, str) and registered and registered != class_name:
            severe.append(f"{trail}: custom registered object {registered!r}")
        children = node.values()
    else:
        children = node if isinstance(node, list) else []
    for child in children:
        problems = _unsafe_entries(child, allowed, trail)
        severe.extend(p for p in problems if "(not a class workbench" not in p)
        other.extend(p for p in problems if "(not a class workbench" in p)
    return severe + other


def _read_config(path: Path) -> dict:
    """The parsed config.json of a `.keras` archive, refused when it is too large or too deeply nested."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = archive.getinfo("config.json").file_size
            if size <= CONFIG_MAX_BYTES:
                with archive.open("config.json") as member:
                    raw = member.read(CONFIG_MAX_BYTES + 1)  # bounded even if the header understates it
                size = len(raw)
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError) as error:
        raise ModelFileError(
            f"{path}: not a Keras v3 .keras archive ({error}); "
            "export the model again with `workbench export --format keras`"
        ) from None
    if size > CONFIG_MAX_BYTES:
        raise ModelFileError(
            f"{path}: refusing to load this model: its config.json is {size:,} bytes uncompressed, over the "
            f"{CONFIG_MAX_BYTES // 2**20} MiB a workbench model's config can need; it was not read"
        )
    depth = json_depth(raw)
    if depth > CONFIG_MAX_DEPTH:
        raise ModelFileError(
            f"{path}: refusing to load this model: its config.json nests {depth:,} levels deep, over the "
            f"{CONFIG_MAX_DEPTH} a workbench model's config can need; it was not parsed"
        )
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(
            f"{path}: not a Keras v3 .keras archive ({error}); "
            "export the model again with `workbench export --format keras`"
        ) from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: not a Keras v3 .keras archive (its config.json is not a JSON object)")
    return config


def inspect_keras_archive(path: str | Path) -> dict:
    """Read and vet the config of a `.keras` archive without deserialising anything.

    Returns the parsed config. Raises `ModelFileError` if the archive is not a Keras v3 archive, its
    config.json is over `CONFIG_MAX_BYTES` or `CONFIG_MAX_DEPTH`, it is not a workbench image classifier
    (a functional model whose last layer is the `predictions` head), or it names a class outside
    `KERAS_CLASSES`. The `compile_config` (optimizer, loss) may hold any Keras class but no code or
    foreign module: `load_keras_model` loads with `compile=False`, and Keras then discards it unread.
    """
    path = Path(path)
    config = _read_config(path)
    inner = config.get("config")
    layers = inner.get("layers", []) if isinstance(inner, dict) else []
    names = [layer.get("name") or layer.get("config", {}).get("name") for layer in layers if isinstance(layer, dict)]
    if config.get("class_name") != "Functional" or "predictions" not in names:
        raise ModelFileError(
            f"{path}: not a workbench image classifier (expected a functional model whose output layer is "
            "named 'predictions'); train it with `workbench train` or build it with workbench.models.build_model"
        )
    model = {key: value for key, value in config.items() if key != "compile_config"}
    problems = _unsafe_entries(model, KERAS_CLASSES) + _unsafe_entries(config.get("compile_config"), None)
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelFileError(
            f"{path}: refusing to load this model: it contains code or classes that workbench models are not "
            f"built from ({listed}). workbench only loads models made by workbench.models.build_model; "
            "load it yourself with keras.saving.load_model(..., safe_mode=False) if you trust its author"
        )
    return config


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


def split_files(run: Run, split: str, limit: int | None = None) -> tuple[list[str], list[int]]:
    """File paths (the decodable copies) and label indices of one split of the run's manifest (-1 for each image of
    a multi-label run, which has label sets rather than one label)."""
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
    return [r.source_path for r in records], [index[r.label] if r.labels is None else -1 for r in records]
