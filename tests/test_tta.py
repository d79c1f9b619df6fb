"""Test-time augmentation (issue 12) on the shared tiny run: the views, and `evaluate`/`predict --tta`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_tiny_run import RESOLUTION, exported, split_images, tiny_run

from workbench.evaluation.tta import CROP_FRACTION, five_crops, tta_predict, views


def test_views_are_the_image_and_its_mirror_or_ten_crops():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    original, mirrored = views(images, "flip")
    np.testing.assert_array_equal(original, images)
    np.testing.assert_array_equal(mirrored[:, :, 0], images[:, :, 15])  # the first column is the last one
    crops = views(images, "crops")
    assert len(crops) == 10 and all(c.shape == images.shape for c in crops)
    side = round(16 * CROP_FRACTION)  # 14: corners start at 0 and 16 - 14
    import tensorflow as tf

    top_left = tf.image.resize(images[:, :side, :side], (16, 16)).numpy()
    np.testing.assert_allclose(crops[0], top_left, atol=1e-4)
    np.testing.assert_allclose(crops[5], top_left[:, :, ::-1], atol=1e-4)  # then the mirrors, in the same order
    centre = tf.image.resize(images[:, 1 : 1 + side, 1 : 1 + side], (16, 16)).numpy()
    np.testing.assert_allclose(five_crops(images)[4], centre, atol=1e-4)
    with pytest.raises(ValueError, match="flip, crops"):
        views(images, "rotate")


def test_flip_averages_the_model_on_the_image_and_its_mirror(tmp_path_factory):
    import keras

    from workbench.serving.imaging import load_files

    model = keras.saving.load_model(tiny_run(tmp_path_factory) / "model.keras")
    images = load_files(split_images(tmp_path_factory)[:4], RESOLUTION)
    expected = (model.predict_on_batch(images) + model.predict_on_batch(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(tta_predict(model.predict_on_batch, images, "flip"), expected, rtol=1e-5, atol=1e-6)


def test_evaluate_reports_accuracy_with_and_without_tta_and_its_cost(tmp_path_factory, capsys):
    from workbench.cli import main

    run = tiny_run(tmp_path_factory)
    assert main(["evaluate", str(run), "--split", "val", "--tta", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tta = report["tta"]
    assert (tta["mode"], tta["views"], tta["accuracy_without"]) == ("flip", 2, report["accuracy"])
    assert 0 <= tta["accuracy"] <= 1 and tta["gain"] == pytest.approx(tta["accuracy"] - report["accuracy"])
    assert tta["seconds"] > 0 and tta["cost"] == pytest.approx(tta["seconds"] / tta["seconds_without"])
    assert main(["evaluate", str(run), "--split", "val", "--tta", "crops"]) == 0
    assert "TTA (crops, 10 views): accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_predict_with_tta_averages_views(tmp_path_factory, fmt):
    from workbench.serving.imaging import load_files
    from workbench.serving.model_files import locate_model
    from workbench.serving.predict import open_model, predict

    path = exported(tmp_path_factory, fmt)
    files = split_images(tmp_path_factory)[:3]
    runtime, labels = open_model(locate_model(path))
    images = load_files(files, RESOLUTION)
    expected = (runtime.predict_images(images) + runtime.predict_images(images[:, :, ::-1])) / 2
    results = predict(path, files, top_k=len(labels), tta="flip")
    for row, result in zip(expected, results, strict=True):
        got = {p["index"]: p["probability"] for p in result["predictions"]}
        np.testing.assert_allclose([got[i] for i in range(len(labels))], row, rtol=1e-4, atol=1e-5)
