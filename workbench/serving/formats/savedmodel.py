"""SavedModel in TF Serving's layout: `<out>/<version>/`, versions 1, 2, ... never overwritten.

Two serving signatures (`SIGNATURES`) decode and resize inside the graph, so no workbench code is needed to
serve it. An export asked for test-time augmentation (`export(..., tta=True)`, `workbench export --tta`)
holds two more (`TTA_SIGNATURES`), never the default: a client asks for them by name. A SavedModel from
elsewhere is vetted from its protobuf (`inspect_saved_model`) before any of it is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.serving.formats.base import ExportFormat, Runtime
from workbench.serving.model_files import ModelFileError

if TYPE_CHECKING:
    from workbench.evaluation.calibrate import Calibration

SIGNATURES = {
    "serving_default": "image_bytes: string (B,) of encoded JPEG/PNG/GIF/BMP → probabilities float32 (B, C), "
    "class_index int32 (B,), class_name string (B,); decoded and resized inside the graph; with calibration "
    "(model card) the probabilities are temperature-scaled and class_index is -1, class_name 'unknown', below "
    "the rejection threshold",
    "serving_rgb": "images: float32 (B, H, W, 3) RGB in [0, 255], any H and W → the same outputs; "
    "resized inside the graph",
}
# A multi-label model's signatures (same inputs): each label answered on its own against its threshold, the
# thresholds and label names being graph constants (`label_thresholds`, and the names as for class_name).
MULTI_LABEL_SIGNATURES = {
    "serving_default": "image_bytes: string (B,) of encoded JPEG/PNG/GIF/BMP → probabilities float32 (B, C) (one "
    "sigmoid per label), over_threshold int32 (B, C) (1 where the probability reaches the label's threshold, tuned "
    "on validation for F1), labels string (B, C) (the label's name where over its threshold, else ''), "
    "thresholds float32 (B, C), class_index int32 (B,) and class_name string (B,) (the most probable label)",
    "serving_rgb": "images: float32 (B, H, W, 3) RGB in [0, 255], any H and W → the same outputs; "
    "resized inside the graph",
}
# Only with `tta`: the outputs of `serving_default` and `serving_rgb`, but the probabilities are the mean over the
# image and its horizontal mirror (the `flip` mode of `workbench.evaluation.tta`), at twice the compute.
TTA_MODE = "flip"
TTA_SIGNATURES = {
    "serving_tta": "image_bytes: string (B,) of encoded images, as serving_default → the same outputs, the "
    "probabilities averaged over the image and its horizontal mirror (test-time augmentation, 2 forward passes)",
    "serving_tta_rgb": "images: float32 (B, H, W, 3) RGB in [0, 255], as serving_rgb → the same outputs, the "
    "probabilities averaged over the image and its horizontal mirror (test-time augmentation, 2 forward passes)",
}

# The op types a workbench export is made of: an ALLOWLIST, because TensorFlow has far more ops that read or
# write files (PrintV2 to a file:// stream, SaveV2 at any prefix, TextLineDataset, CacheDataset, WriteSummary, ...)
# than a denylist can keep up with (hardening report A1). Source: every op type in the SavedModels that
# `write_saved_model` writes, under TensorFlow 2.21, for a B-type model (swish, squeeze-and-excitation, residual
# Add), a Lite-type model (ReLU6, no SE) and a mixed-precision model (Casts), both signatures (the image-bytes
# path includes the EXIF orientation, alpha and pixel-limit checks of `imaging`), the saver's functions excluded.
# tests/test_hostile_models.py re-collects them from fresh exports and fails when a TensorFlow, imaging or
# builder change brings a type not listed here. Add a type only after that test names it.
# The TTA signatures (`TTA_SIGNATURES`) need no type of their own: their mirror is ReverseV2 (already here for
# the EXIF orientation flips of the image-bytes path), then ConcatV2, StridedSlice, AddV2 and Mul; the same test
# re-collects them from TTA exports. A calibrated export (`workbench.serving.calibrated`: temperature, rejection
# threshold) adds Max (the top probability), and Exp and Log (the energy score's logsumexp); the same test
# re-collects them from calibrated exports of both scores. The feature scores (`workbench.evaluation.ood`:
# Mahalanobis distances on the pooled features, a second output of the same forward pass) need no type of
# their own (MatMul, Mul, Sum, Sub, AddV2, Max; Square, Maximum and Rsqrt for unit-norm features): the same test
# re-collects them from a mixed-precision TTA export with `mahalanobis_l2`.
SERVING_OPS = frozenset(
    {
        "Abs", "AddV2", "Any", "ArgMax", "Assert", "AssignVariableOp", "BiasAdd", "Cast", "ConcatV2", "Const",
        "Conv2D", "DecodeAndCropJpeg", "DecodeGif", "DecodeImage", "DecodePaddedRaw", "DecodePng", "DecodeWebP",
        "DepthwiseConv2dNative", "Equal", "Exp", "ExpandDims", "ExtractJpegShape", "Fill", "FloorDiv", "FloorMod",
        "GatherV2", "GreaterEqual", "Identity", "IdentityN", "If", "Less", "LessEqual", "Log", "LogicalAnd",
        "LogicalNot", "LogicalOr", "MatMul", "Max", "Maximum", "Mean", "Minimum", "Mul", "NoOp", "NotEqual", "Pack",
        "Pad", "Placeholder", "Pow", "Range", "ReadVariableOp", "RealDiv", "ReduceJoin", "Relu6", "Reshape",
        "ResizeBilinear", "ReverseV2", "Round", "Rsqrt", "SelectV2", "Shape", "Sigmoid", "Softmax", "Sqrt", "Square",
        "Squeeze",
        "StatefulPartitionedCall", "StatelessCase", "StatelessIf", "StatelessWhile", "StridedSlice", "StringLength",
        "Sub", "Substr", "Sum", "TensorListFromTensor", "TensorListGetItem", "TensorListReserve", "TensorListSetItem",
        "TensorListStack", "Transpose", "VarHandleOp", "VarIsInitializedOp", "While",
    }
)  # fmt: skip
# The saver's two functions (named by the graph's `saver_def`) write and read the variables checkpoint, so they
# need file ops; each is allowed its own, and only in functions reachable from the saver alone, never from a
# serving signature. TF Serving runs the restore function when it loads a model, so it gets no writing op.
SAVE_OPS = frozenset(
    {
        "SaveV2",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "StringJoin",
        "StaticRegexFullMatch",
        "Select",
        "DisableCopyOnRead",
    }
)
RESTORE_OPS = frozenset({"RestoreV2"})
_DT_STRING = 7  # tensorflow.core.framework.types_pb2.DT_STRING


def _classify_fn(outputs_of, class_names: list[str], calibration: Calibration | None = None, thresholds=None):
    """The signatures' outputs from `outputs_of` (resized float images (B, R, R, 3) → (B, C)): the model's
    probabilities, or with `calibration` its logits, scaled and thresholded (`workbench.serving.calibrated`);
    with per-label `thresholds` (a multi-label model) the labels over them (`MULTI_LABEL_SIGNATURES`)."""
    import tensorflow as tf

    from workbench.serving.calibrated import calibrated_outputs, class_names_of

    def classify(images):
        if thresholds is not None:
            probabilities = tf.cast(outputs_of(images), tf.float32)
            limits = tf.constant(thresholds, tf.float32, name="label_thresholds")
            over = probabilities >= limits
            names = tf.constant(class_names)
            index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            return {
                "probabilities": probabilities,
                "over_threshold": tf.cast(over, tf.int32),
                "labels": tf.where(over, names, tf.constant("")),
                # Mul and AddV2 broadcast the row to (B, C) with ops SERVING_OPS already has (ZerosLike is not).
                "thresholds": 0.0 * probabilities + limits,
                "class_index": index,
                "class_name": tf.gather(names, index),
            }
        if calibration is None:  # as before calibration existed: the model's own softmax, its argmax
            probabilities = outputs_of(images)
            index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            names = tf.constant(class_names)
            return {"probabilities": probabilities, "class_index": index, "class_name": tf.gather(names, index)}
        outputs = outputs_of(images)  # logits, or (logits, pooled features) for a feature score
        logits, features = outputs if calibration.needs_features else (outputs, None)
        probabilities, index = calibrated_outputs(logits, calibration, features)
        return {"probabilities": probabilities, "class_index": index, "class_name": class_names_of(index, class_names)}

    return classify


def _flip_averaged(model):
    """Resized float images → the mean of `model`'s outputs on them and on their horizontal mirrors.

    One forward pass over the image and mirror batches stacked (2B images), then the halves averaged: the
    mirror is made after decoding and resizing, as `workbench.evaluation.tta.flip` mirrors evaluation pixels.
    (With calibration, `model` gives logits: the mean logits are then scaled and thresholded; with a feature score
    it also gives the pooled features, and the mean features are scored.)
    """
    import tensorflow as tf

    def probabilities_of(images):
        mirrored = tf.reverse(images, axis=[2])  # (B, H, W, 3): W is axis 2
        both = model(tf.concat([images, mirrored], axis=0), training=False)
        count = tf.shape(images)[0]
        return tf.nest.map_structure(lambda x: (x[:count] + x[count:]) * 0.5, both)

    return probabilities_of


def write_saved_model(
    model,
    class_names: list[str],
    resolution: int,
    directory: Path,
    *,
    tta: bool = False,
    calibration: Calibration | None = None,
    thresholds=None,
) -> Path:
    """Write a SavedModel with the two serving signatures of `SIGNATURES` into `directory`, and with `tta`
    the two of `TTA_SIGNATURES` besides them (`serving_default` stays the default either way).

    With `calibration` (`workbench.evaluation.calibrate.Calibration`) the probabilities are the temperature-scaled
    ones and, under its threshold, `class_index` is -1 and `class_name` "unknown"; the temperature and threshold
    are constants of the graph. Without it the outputs are the model's own, as before.

    The input name `image_bytes` ends in `_bytes` on purpose: TF Serving's REST API then accepts
    `{"b64": "..."}` JSON values for it.
    """
    import tensorflow as tf
    from keras.export import ExportArchive

    from workbench.engine.heads import logits_and_features_model, logits_model
    from workbench.serving.imaging import decode_batch, resize_images

    archive = ExportArchive()
    archive.track(model)
    network = model
    if calibration is not None:
        # Shares the model's weights; its extra Dense holds the head's copy. A feature score also takes the
        # pooled features: a second output of the same forward pass.
        network = logits_and_features_model(model) if calibration.needs_features else logits_model(model)
        archive.track(network)

    def add_pair(bytes_name: str, images_name: str, outputs_of) -> None:
        # A function per pair: the endpoints' traced signatures must take their one input and nothing else.
        classify = _classify_fn(outputs_of, class_names, calibration, thresholds)
        archive.add_endpoint(
            bytes_name,
            lambda image_bytes: classify(decode_batch(image_bytes, resolution)),
            input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")],
        )
        archive.add_endpoint(
            images_name,
            lambda images: classify(resize_images(images, resolution)),
            input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="images")],
        )

    add_pair("serving_default", "serving_rgb", lambda images: network(images, training=False))
    if tta:
        add_pair("serving_tta", "serving_tta_rgb", _flip_averaged(network))
    archive.write_out(str(directory), verbose=False)
    return directory


def _calls(node) -> set[str]:
    """Names of the functions a node calls through its attributes: `f` of (Stateful)PartitionedCall, the
    branches of If/Case, `cond` and `body` of While, and any other function-valued attribute."""
    names: set[str] = set()
    for value in node.attr.values():
        if value.func.name:
            names.add(value.func.name)
        names.update(func.name for func in value.list.func)
    return names


def _reachable(roots: set[str], calls: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    pending = [name for name in roots if name in calls]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(callee for callee in calls[name] if callee in calls and callee not in seen)
    return seen


def disallowed_ops(graph) -> dict[str, set[str]]:
    """Op types of a MetaGraphDef that a workbench export does not contain where they appear, by place.

    Every node of the graph and of every function in its library is checked, not only what the signatures
    reach: loading a SavedModel also runs resource initialisers and the saver's restore function. A function
    reachable only from the saver's save (or restore) node may also use `SAVE_OPS` (or `RESTORE_OPS`);
    everything else, including library functions nothing names, must use `SERVING_OPS` alone.
    """
    library = {function.signature.name: function for function in graph.graph_def.library.function}
    calls = {name: set().union(*(_calls(node) for node in f.node_def)) for name, f in library.items()}
    saver = graph.saver_def
    saver_nodes = {saver.save_tensor_name.split(":")[0]: "save", saver.restore_op_name.split(":")[0]: "restore"}
    roots: dict[str, set[str]] = {"serving": set(), "save": set(), "restore": set()}
    for node in graph.graph_def.node:
        roots[saver_nodes.get(node.name, "serving")].update(_calls(node))
    named = set().union(*calls.values(), *roots.values())
    roots["serving"].update(name for name in library if name not in named)  # run by nothing we can see: strict
    reach = {role: _reachable(names, calls) for role, names in roots.items()}
    extra = {"save": SAVE_OPS, "restore": RESTORE_OPS}
    found: dict[str, set[str]] = {}

    def check(place: str, ops: set[str], allowed: frozenset) -> None:
        if ops - allowed:
            found.setdefault(place, set()).update(ops - allowed)

    check("the graph", {node.op for node in graph.graph_def.node}, SERVING_OPS)
    for name, function in library.items():
        roles = [role for role in reach if name in reach[role]]
        allowed = extra[roles[0]] | SERVING_OPS if roles in (["save"], ["restore"]) else SERVING_OPS
        place = f"saver function {name}" if roles in (["save"], ["restore"]) else f"function {name}"
        check(place, {node.op for node in function.node_def}, allowed)
    return found


def inspect_saved_model(directory: str | Path) -> None:
    """Vet a SavedModel from its protobuf alone (parsing runs nothing) before `tf.saved_model.load`.

    Raises `ModelFileError` unless it holds one graph whose `serving_default` signature takes `image_bytes`
    strings (the workbench export) and every op of which is one a workbench export uses there
    (`disallowed_ops`: `SERVING_OPS`, plus the saver's file ops in the saver's functions only).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    directory = Path(directory)
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
    except Exception as error:
        raise ModelFileError(f"{directory}: saved_model.pb is not a valid SavedModel ({error})") from None
    if len(saved_model.meta_graphs) != 1:
        # The loader picks a graph by its tags; with one graph, the one vetted is the one loaded.
        raise ModelFileError(
            f"{directory}: the SavedModel holds {len(saved_model.meta_graphs)} graphs; a workbench export holds "
            "exactly one (export the run again with `workbench export --format savedmodel`)"
        )
    graph = saved_model.meta_graphs[0]
    signature = graph.signature_def.get("serving_default")
    inputs = {} if signature is None else signature.inputs
    if "image_bytes" not in inputs or inputs["image_bytes"].dtype != _DT_STRING:
        raise ModelFileError(
            f"{directory}: not a workbench SavedModel (its serving_default signature does not take "
            "'image_bytes' strings); export the run with `workbench export --format savedmodel`"
        )
    found = disallowed_ops(graph)
    if found:
        ops = sorted(set().union(*found.values()))
        places = sorted(found)
        where = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
        raise ModelFileError(
            f"{directory}: refusing to load this SavedModel: it uses {', '.join(ops)} (in {where}), op types a "
            "workbench export never contains there (they could read or write files or run code); nothing was "
            "loaded. Use a SavedModel written by `workbench export --format savedmodel`"
        )


def _versions(base: Path) -> list[Path]:
    return [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []


class SavedModelRuntime(Runtime):
    """A SavedModel run through its own signatures: the graph decodes and resizes, so any image size works."""

    def __init__(self, directory: Path):
        import tensorflow as tf

        self.signatures = tf.saved_model.load(str(directory)).signatures

    def predict_images(self, images, batch_size: int = 32):
        return self.classify_images(images, batch_size)[0]

    def classify_images(self, images, batch_size: int = 32):
        """The graph's own probabilities and class index (-1 where a calibrated export rejects the image)."""
        import numpy as np
        import tensorflow as tf

        serve = self.signatures["serving_rgb"]
        batches = [serve(images=tf.constant(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return (
            np.concatenate([b["probabilities"].numpy() for b in batches], axis=0),
            np.concatenate([b["class_index"].numpy() for b in batches], axis=0),
        )

    def predict_bytes(self, encoded: list[bytes]):
        return self.classify_bytes(encoded)[0]

    def classify_bytes(self, encoded: list[bytes]):
        import tensorflow as tf

        outputs = self.signatures["serving_default"](image_bytes=tf.constant(encoded))
        return outputs["probabilities"].numpy(), outputs["class_index"].numpy()


@dataclass(frozen=True)
class SavedModelFormat(ExportFormat):
    """`tta`: also write `TTA_SIGNATURES` (set by `with_tta`; the registered format has it off)."""

    tta: bool = False

    def with_tta(self) -> SavedModelFormat:
        return dataclasses.replace(self, tta=True)

    def destination(self, base: Path, version: int | None) -> Path:
        """`base/<version>`, the next free version by default; an existing version is refused (immutable)."""
        if version is None:
            version = max((int(p.name) for p in _versions(base)), default=0) + 1
        target = base / str(int(version))
        if target.exists():
            raise FileExistsError(f"{target} already exists; TF Serving versions are immutable, pick another --version")
        return target

    calibrated_graph: bool = True

    def write(self, run, directory: Path) -> dict:
        from workbench.evaluation.calibrate import read_calibration
        from workbench.serving.multi_label import run_thresholds

        calibration = read_calibration(run.path)
        thresholds = run_thresholds(run)  # None for a single-label run
        write_saved_model(
            run.model,
            run.class_names,
            run.resolution,
            directory,
            tta=self.tta,
            calibration=calibration,
            thresholds=thresholds,
        )
        signatures = SIGNATURES if thresholds is None else MULTI_LABEL_SIGNATURES
        if not self.tta:
            return {"signatures": signatures, "tta": None}
        tta = {"mode": TTA_MODE, "views": 2, "signatures": list(TTA_SIGNATURES)}
        return {"signatures": signatures | TTA_SIGNATURES, "tta": tta}

    def recognise(self, path: Path) -> Path | None:
        """A version directory, or a TF Serving base directory (its highest version holding a SavedModel)."""
        if not path.is_dir():
            return None
        if (path / "saved_model.pb").is_file():
            return path
        versions = [p for p in _versions(path) if (p / "saved_model.pb").is_file()]
        return max(versions, key=lambda p: int(p.name)) if versions else None

    def verify(self, path: Path) -> None:
        inspect_saved_model(path)

    def open(self, path: Path) -> SavedModelRuntime:
        self.verify(path)  # vetted from its protobuf before any of it is loaded
        return SavedModelRuntime(path)


SAVEDMODEL = SavedModelFormat(
    name="savedmodel",
    label="SavedModel (TF Serving)",
    kind="savedmodel",
    files=("saved_model.pb", "variables/"),
    input="encoded images (serving_default) or float32 RGB in [0, 255] of any size (serving_rgb); "
    "centre-cropped and resized to {size}x{size} inside the graph",
    versioned=True,
)
