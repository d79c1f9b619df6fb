"""The `onnx` export: verified in onnxruntime against Keras at export, the same answers as the run through
`predict`, and a file that reads external data or runs custom operators refused before it is loaded."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime", reason="the onnx format needs onnx, onnxruntime and tf2onnx (scripts/install.sh)")
pytest.importorskip("tf2onnx", reason="the onnx format needs onnx, onnxruntime and tf2onnx (scripts/install.sh)")

from helpers_tiny_run import exported, split_images, tiny_run

from workbench.serving.formats.onnx import INPUT_NAME, MAX_PROBABILITY_DIFFERENCE, OUTPUT_NAME
from workbench.serving.model_files import ModelFileError, locate_model
from workbench.serving.predict import predict


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return exported(tmp_path_factory, "onnx")


def test_export_is_verified_against_keras_and_carded(onnx_path):
    import onnx

    assert onnx_path.name == "model.onnx" and (onnx_path.parent / "labels.txt").is_file()
    card = json.loads((onnx_path.parent / "model_card.json").read_text())
    verification = card["verification"]
    assert verification["split"] == "test" and verification["num_images"] > 0
    assert verification["top1_agreement"] == 1.0
    assert verification["max_probability_difference"] <= MAX_PROBABILITY_DIFFERENCE
    assert verification["runtime"].startswith("onnxruntime ") and "tf2onnx" in verification["converter"]
    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] and [o.name for o in graph.output] == [OUTPUT_NAME]
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [32, 32, 3]  # NHWC at the run's resolution, any batch
    assert locate_model(onnx_path).format == "onnx"


def test_predict_runs_it_with_the_runs_answers(tmp_path_factory, onnx_path):
    images = split_images(tmp_path_factory)[:4]
    reference = predict(tiny_run(tmp_path_factory), images, top_k=3)
    for got, expected in zip(predict(onnx_path, images, top_k=3), reference, strict=True):
        assert [p["class"] for p in got["predictions"]] == [p["class"] for p in expected["predictions"]]
        for a, b in zip(got["predictions"], expected["predictions"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)


def _rewritten(onnx_path, tmp_path, change) -> str:
    import onnx

    model = onnx.load(str(onnx_path))
    change(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_external_data_and_foreign_operators_are_refused_before_loading(onnx_path, tmp_path):
    import onnx

    def external(model):
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "weights.bin"

    with pytest.raises(ModelFileError, match="reads tensors from external files"):
        predict(_rewritten(onnx_path, tmp_path, external), [split_images_any(tmp_path)])

    def custom(model):
        model.graph.node[0].domain = "com.microsoft"
        model.opset_import.add(domain="com.microsoft", version=1)

    with pytest.raises(ModelFileError, match=r"operators of the domains com\.microsoft"):
        predict(_rewritten(onnx_path, tmp_path, custom), [split_images_any(tmp_path)])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08" + b"\xff" * 64)
    with pytest.raises(ModelFileError, match="not a valid ONNX model"):
        predict(garbage, [split_images_any(tmp_path)])


def split_images_any(tmp_path) -> str:
    """A small valid JPEG: the refusals must come from the model, not the image."""
    from PIL import Image

    path = tmp_path / "image.jpg"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(path)
    return str(path)


def test_serve_runs_it(tmp_path_factory, onnx_path):
    """`workbench serve` opens it through the registry like any format (the HTTP layer is tests/test_serve.py's)."""
    from pathlib import Path

    from workbench.serving.server.model import ImageInput, ServedModel

    image = split_images(tmp_path_factory)[0]
    served = ServedModel.load(onnx_path)
    assert served.format == "onnx" and served.name == "tiny"
    (answer,) = served.classify([ImageInput("image", Path(image).read_bytes())])
    expected = predict(onnx_path, [image], top_k=3)[0]
    assert answer.index == expected["class_index"]
    row, top = answer.probabilities, expected["predictions"]
    assert [row[p["index"]] for p in top] == pytest.approx([p["probability"] for p in top], abs=1e-6)
