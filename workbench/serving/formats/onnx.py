"""ONNX (`<out>/onnx/model.onnx`): the model's float32 inference graph for onnxruntime, verified at export.

The converter is tf2onnx, run on the model's frozen inference function (variables and constants folded into the
graph). Keras 3's own `model.export(format="onnx")` goes through tf2onnx too, but under Keras 3.15 / TensorFlow
2.21 it leaves the `Normalization` layer's mean and variance as two extra graph inputs, so its file does not run
without feeding them; freezing the function first (`convert_variables_to_constants_v2`) makes them constants.

The input is what the TFLite float model takes: `images`, float32 RGB (B, R, R, 3) in [0, 255], NHWC, at the model's
resolution (normalisation is inside the graph; decoding and resizing are `workbench.serving.imaging`'s, as for
TFLite). The output is `probabilities` (B, C). `write` runs the file in onnxruntime against Keras on the run's test
split (else val) and refuses the export unless top-1 is equal on every image and the probabilities differ by at
most `MAX_PROBABILITY_DIFFERENCE`; the model card records the figures.

An ONNX file is a protobuf of a graph: no code, but it may point to external data files by path (anything on disk)
and name operators of other domains (onnxruntime's contrib ops, custom-op libraries). `verify` parses it (parsing
runs nothing) and refuses both, then onnxruntime builds the session from the bytes read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.serving.formats.base import ExportFormat, Runtime
from workbench.serving.model_files import ModelFileError, Run, split_files

if TYPE_CHECKING:
    from workbench.evaluation.calibrate import Calibration

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
INDEX_NAME = "class_index"  # the second output of a calibrated run's export: -1 where it rejects the image
# Keras against onnxruntime on the same pixels: the float32 graph reorders a few sums, nothing more.
MAX_PROBABILITY_DIFFERENCE = 1e-4
# The operator domains a converted classifier uses: the default ONNX domain (tf2onnx also declares ai.onnx.ml).
ALLOWED_DOMAINS = frozenset({"", "ai.onnx"})
_INSTALL = "install them with `pip install onnx onnxruntime tf2onnx` (or scripts/install.sh)"


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelFileError(
            f"the ONNX format needs the {module} package, which is not installed; {_INSTALL}"
        ) from None


def convert_onnx(model, resolution: int, calibration: Calibration | None = None) -> bytes:
    """The model's inference function as an ONNX model: `images` (B, R, R, 3) float32 → `probabilities` (B, C).

    With the run's `calibration`, the probabilities are temperature-scaled and a second output, `class_index`
    (int32, -1 below the rejection threshold), is the graph's answer, as in the SavedModel and TFLite exports
    (`workbench.serving.calibrated`: the energy score needs the logits, which the probabilities no longer hold)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf2onnx = _require("tf2onnx")
    spec = tf.TensorSpec((None, resolution, resolution, 3), tf.float32, name=INPUT_NAME)
    if calibration is None:
        function = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    else:
        from workbench.serving.calibrated import calibrated_network

        function = tf.function(calibrated_network(model, calibration)[1], input_signature=[spec])
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs],
        opset=OPSET,
    )
    names = {frozen.inputs[0].name: INPUT_NAME, frozen.outputs[0].name: OUTPUT_NAME}
    if calibration is not None:
        names[frozen.outputs[1].name] = INDEX_NAME
    _rename(proto.graph, names)
    return proto.SerializeToString()


def _rename(graph, names: dict[str, str]) -> None:
    """Give the graph's input and output tensors readable names (tf2onnx keeps TensorFlow's `images:0`)."""
    for value in (*graph.input, *graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def _session(data: bytes, num_threads: int | None = None):
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's business
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxClassifier(Runtime):
    """An ONNX classifier in onnxruntime: float32 RGB [0, 255] at `resolution` in, probabilities out."""

    def __init__(self, data: bytes, num_threads: int | None = None):
        """`data`: the bytes of a model `inspect_onnx` accepted (or that this process just converted)."""
        self.session = _session(data, num_threads)
        self._input = self.session.get_inputs()[0].name
        self.resolution = int(self.session.get_inputs()[0].shape[1])

    def predict_images(self, images, batch_size: int = 32):
        return self.classify_images(images, batch_size)[0]

    def classify_images(self, images, batch_size: int = 32):
        """(probabilities, class index): the graph's own index when it has one (a calibrated export), else the
        argmax."""
        import numpy as np

        images = np.asarray(images, dtype=np.float32)
        runs = [
            self.session.run(None, {self._input: images[i : i + batch_size]}) for i in range(0, len(images), batch_size)
        ]
        probabilities = np.concatenate([run[0] for run in runs], axis=0).astype(np.float32)
        if len(runs[0]) > 1:
            return probabilities, np.concatenate([run[1] for run in runs], axis=0).astype(np.int64)
        return probabilities, probabilities.argmax(axis=1)


def verification_report(run: Run, data: bytes) -> dict:
    """onnxruntime against Keras on the run's test split (else val): top-1 agreement and the largest probability
    difference; `ModelFileError` when they differ by more than conversion round-off."""
    import importlib.metadata

    import numpy as np

    from workbench.serving.imaging import load_files

    for split in ("test", "val"):
        paths, _ = split_files(run, split)
        if paths:
            break
    else:
        return {"note": "no test or val split in the run's manifest; not verified"}
    images = load_files(paths, run.resolution)
    reference, expected = _keras_answers(run, images)
    converted, indices = OnnxClassifier(data).classify_images(images)
    agreement = float((expected == indices).mean())
    difference = float(np.abs(reference - converted).max())
    report = {
        "runtime": f"onnxruntime {importlib.metadata.version('onnxruntime')}",
        "converter": f"tf2onnx {importlib.metadata.version('tf2onnx')}, opset {OPSET}",
        "split": split,
        "num_images": len(images),
        "top1_agreement": round(agreement, 4),
        "max_probability_difference": float(f"{difference:.2e}"),
    }
    if agreement < 1.0 or difference > MAX_PROBABILITY_DIFFERENCE:
        raise ModelFileError(
            f"the ONNX conversion of {run.path} does not match Keras on the {split} split: top-1 agreement "
            f"{agreement:.2%}, largest probability difference {difference:.2g} (at most {MAX_PROBABILITY_DIFFERENCE:g}); "
            "nothing was exported. Export savedmodel or tflite instead, and report the versions: "
            f"{report['converter']}, {report['runtime']}"
        )
    return report


def _keras_answers(run: Run, images):
    """Keras' (probabilities, class index) for `images`, calibrated as the export is (`calibration.json`)."""
    from workbench.evaluation.calibrate import read_calibration

    calibration = read_calibration(run.path)
    if calibration is None:
        reference = run.model.predict(images, batch_size=32, verbose=0)
        return reference, reference.argmax(1)
    from workbench.serving.calibrated import calibrated_network
    from workbench.serving.formats.keras_file import calibrated_answers

    return calibrated_answers(calibrated_network(run.model, calibration)[0], calibration, images)


def inspect_onnx(path: Path, data: bytes) -> None:
    """Vet an ONNX model from its bytes (parsing runs nothing): `ModelFileError` unless it is a well-formed
    graph with one float32 (B, R, R, 3) input and one output, no external data, and operators of the default
    domain only (subgraphs of If/Loop/Scan and local functions included)."""
    onnx = _require("onnx")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # DecodeError: not a protobuf of a model
        raise ModelFileError(f"{path}: not a valid ONNX model ({_first_line(error)})") from None
    graph = model.graph
    # Before the checker, which would stat the external files itself.
    external = [t.name for t in _tensors(graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ModelFileError(
            f"{path}: refusing to load this ONNX model: it reads tensors from external files ({external[0]}, ...), "
            "which can name any file on disk; a workbench export keeps every weight inside model.onnx"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # ValidationError: a graph onnxruntime should not be handed
        raise ModelFileError(f"{path}: not a valid ONNX model ({_first_line(error)})") from None
    domains = {node.domain for node in _nodes(graph, model.functions)} - ALLOWED_DOMAINS
    if domains:
        raise ModelFileError(
            f"{path}: refusing to load this ONNX model: it uses operators of the domains {', '.join(sorted(domains))}, "
            "which a workbench export never contains (custom operators run native code); export it again with "
            "`workbench export --format onnx`"
        )
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    float32 = len(inputs) == 1 and inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    outputs = [o.name for o in graph.output]
    known_outputs = outputs in ([OUTPUT_NAME], [OUTPUT_NAME, INDEX_NAME]) or len(outputs) == 1
    if not (float32 and len(dims) == 4 and dims[3] == 3 and dims[1] and dims[1] == dims[2] and known_outputs):
        raise ModelFileError(
            f"{path}: not a workbench classifier (expected one float32 input of shape (B, R, R, 3) and the outputs "
            f"{OUTPUT_NAME}, and {INDEX_NAME} when calibrated); export the run with `workbench export --format onnx`"
        )


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0][:200]


def _nodes(graph, functions=()):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in (attribute.g, *attribute.graphs):
                yield from _nodes(sub)
    for function in functions:
        yield from function.node


def _tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in (attribute.g, *attribute.graphs):
                yield from _tensors(sub)


def _is_onnx(path: Path) -> bool:
    """A `.onnx` file that starts like a serialised ModelProto (field 1, `ir_version`, a varint)."""
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(1) == b"\x08"


@dataclass(frozen=True)
class OnnxFormat(ExportFormat):
    def write(self, run, directory: Path) -> dict:
        from pipelines.files import atomic_write_bytes
        from workbench.evaluation.calibrate import read_calibration

        data = convert_onnx(run.model, run.resolution, read_calibration(run.path))
        report = verification_report(run, data)  # refuses before anything is written
        atomic_write_bytes(directory / self.files[0], data)
        return {
            "onnx": {"opset": OPSET, "bytes": len(data), "input": INPUT_NAME, "output": OUTPUT_NAME},
            "verification": report,
        }

    def recognise(self, path: Path) -> Path | None:
        return path if _is_onnx(path) else None

    def verify(self, path: Path) -> None:
        inspect_onnx(path, path.read_bytes())

    def open(self, path: Path) -> OnnxClassifier:
        data = path.read_bytes()  # read once: the session is built from the bytes that were vetted
        inspect_onnx(path, data)
        return OnnxClassifier(data)


ONNX = OnnxFormat(name="onnx", label="ONNX (onnxruntime)", kind="onnx", files=("model.onnx",), calibrated_graph=True)
