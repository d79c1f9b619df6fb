"""SavedModel in TF Serving's layout: `<out>/<version>/`, versions 1, 2, ... never overwritten.

Two serving signatures (`SIGNATURES`) decode and resize inside the graph, so no workbench code is needed to
serve it. A SavedModel from elsewhere is vetted from its protobuf (`inspect_saved_model`) before any of it
is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.serving.formats.base import ExportFormat, Runtime
from workbench.serving.model_files import ModelFileError

SIGNATURES = {
    "serving_default": "image_bytes: string (B,) of encoded JPEG/PNG/GIF/BMP → probabilities float32 (B, C), "
    "class_index int32 (B,), class_name string (B,); decoded and resized inside the graph",
    "serving_rgb": "images: float32 (B, H, W, 3) RGB in [0, 255], any H and W → the same outputs; "
    "resized inside the graph",
}

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


def _versions(base: Path) -> list[Path]:
    return [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []


class SavedModelRuntime(Runtime):
    """A SavedModel run through its own signatures: the graph decodes and resizes, so any image size works."""

    def __init__(self, directory: Path):
        import tensorflow as tf

        self.signatures = tf.saved_model.load(str(directory)).signatures

    def predict_images(self, images, batch_size: int = 32):
        import numpy as np
        import tensorflow as tf

        serve = self.signatures["serving_rgb"]
        batches = [serve(images=tf.constant(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate([b["probabilities"].numpy() for b in batches], axis=0)

    def predict_bytes(self, encoded: list[bytes]):
        import tensorflow as tf

        return self.signatures["serving_default"](image_bytes=tf.constant(encoded))["probabilities"].numpy()


@dataclass(frozen=True)
class SavedModelFormat(ExportFormat):
    def destination(self, base: Path, version: int | None) -> Path:
        """`base/<version>`, the next free version by default; an existing version is refused (immutable)."""
        if version is None:
            version = max((int(p.name) for p in _versions(base)), default=0) + 1
        target = base / str(int(version))
        if target.exists():
            raise FileExistsError(f"{target} already exists; TF Serving versions are immutable, pick another --version")
        return target

    def write(self, run, directory: Path) -> dict:
        write_saved_model(run.model, run.class_names, run.resolution, directory)
        return {"signatures": SIGNATURES}

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
