"""Grad-CAM on the last convolution block (`top_activation`) of any variant, and `workbench explain`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_tiny_run import split_images, tiny_run

from workbench.evaluation.explain import explain, grad_cam, overlay


@pytest.mark.parametrize("variant", ["phi=-8", "lite0"])
def test_grad_cam_heatmap_for_a_b_and_a_lite_variant(variant):
    from workbench.models import build_model

    model = build_model(variant, num_classes=4, input_shape=(96, 96, 3))
    image = np.random.default_rng(0).uniform(0, 255, (96, 96, 3)).astype("float32")
    heatmap, predicted, probabilities = grad_cam(model, image)
    # top_activation has stride 32: a 3x3 map for 96 px, scaled to [0, 1] with its peak at 1.
    assert heatmap.shape == (3, 3) and heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)
    assert predicted == int(np.argmax(probabilities)) and probabilities.shape == (4,)
    other = (predicted + 1) % 4
    heatmap_other, chosen, _ = grad_cam(model, image, class_index=other)
    assert chosen == other and not np.allclose(heatmap_other, heatmap)


def test_overlay_keeps_the_image_size_and_tints_hot_regions():
    image = np.full((40, 60, 3), 128, np.uint8)
    heatmap = np.zeros((2, 2), np.float32)
    heatmap[0, 0] = 1.0
    blended = overlay(image, heatmap)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    # jet: hot is red, cold is blue.
    assert blended[0, 0, 0] > blended[0, 0, 2] and blended[-1, -1, 2] > blended[-1, -1, 0]


def test_explain_writes_an_overlay_for_predicted_and_chosen_class(tmp_path_factory, tmp_path):
    from PIL import Image

    run = tiny_run(tmp_path_factory)
    image = split_images(tmp_path_factory)[0]
    result = explain(run, image)
    with Image.open(result["out"]) as written, Image.open(image) as source:
        side = min(source.size)
        assert written.size == (side, side)  # the centre square the model saw, at the file's resolution
    assert result["class"] == result["predicted"]
    chosen = explain(run, image, class_name="green", out=tmp_path / "cam.png")
    assert chosen["class"] == "green" and (tmp_path / "cam.png").is_file()
    with pytest.raises(ValueError, match=r"unknown class 'purple'.*blue, green, red"):
        explain(run, image, class_name="purple")


def test_cli_explain_and_refusal_of_non_keras_models(tmp_path_factory, tmp_path, capsys):
    from helpers_tiny_run import exported

    from workbench.cli import main

    image = split_images(tmp_path_factory)[0]
    assert main(["explain", str(tiny_run(tmp_path_factory)), image, "--out", str(tmp_path / "x.png")]) == 0
    assert "Grad-CAM" in capsys.readouterr().out and (tmp_path / "x.png").is_file()
    assert main(["explain", str(exported(tmp_path_factory, "tflite")), image]) == 2
    assert "Grad-CAM needs the Keras model" in capsys.readouterr().err


def test_a_crafted_label_cannot_write_outside_the_explain_folder(tmp_path_factory, tmp_path):
    # A4 (issue 11): the output name was `<image>_<label>.png`, so a labels.txt shipped beside a model with
    # `../../…/owned` wrote anywhere. The name now holds the class index and the label sanitised.
    import shutil

    model_dir = tmp_path / "evil" / "expl"
    model_dir.mkdir(parents=True)
    shutil.copy(tiny_run(tmp_path_factory) / "model.keras", model_dir / "model.keras")
    # Every class is crafted, so whichever the model predicts is a path.
    (model_dir / "labels.txt").write_text("".join(f"../../../escaped/owned{i}\n" for i in range(3)))
    image = split_images(tmp_path_factory)[0]
    result = explain(model_dir / "model.keras", image)
    written = Path(result["out"])
    assert written.parent == model_dir / "explain" and written.is_file()
    index = int(result["class"][-1])
    assert result["class"] == f"../../../escaped/owned{index}"
    assert written.name == f"{Path(image).stem}_{index:03d}-_________escaped_owned{index}.png"
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "evil" / "escaped").exists()
