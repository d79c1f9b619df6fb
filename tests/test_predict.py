"""`workbench predict`: the same answer from every format, as a table or JSON, and clear errors."""

from __future__ import annotations

import json

import pytest
from helpers_tiny_run import exported, split_images, tiny_run

from workbench.serving.predict import format_table, predict


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return split_images(tmp_path_factory)[:4]


def test_every_format_gives_the_run_top1(tmp_path_factory, images):
    reference = predict(tiny_run(tmp_path_factory), images, top_k=3)
    assert [r["image"] for r in reference] == images
    for result in reference:
        probabilities = [p["probability"] for p in result["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    version_dir = exported(tmp_path_factory, "savedmodel")
    models = {
        "savedmodel version": version_dir,
        "savedmodel base": version_dir.parent,
        "keras": exported(tmp_path_factory, "keras"),
        "tflite": exported(tmp_path_factory, "tflite"),
    }
    for kind, model in models.items():
        results = predict(model, images, top_k=1)
        top1 = [r["predictions"][0]["class"] for r in results]
        assert top1 == [r["predictions"][0]["class"] for r in reference], kind
        assert [r["predictions"][0]["probability"] for r in results] == pytest.approx(
            [r["predictions"][0]["probability"] for r in reference], abs=1e-4
        ), kind


def test_int8_tflite_predicts_dequantised_probabilities(tmp_path_factory, images):
    results = predict(exported(tmp_path_factory, "tflite-int8"), images, top_k=3)
    for result in results:
        probabilities = [p["probability"] for p in result["predictions"]]
        # uint8 outputs with scale 1/256: dequantised, they still sum to one within a few steps.
        assert sum(probabilities) == pytest.approx(1.0, abs=4 / 256)
        assert {p["class"] for p in result["predictions"]} == {"blue", "green", "red"}


def test_cli_table_and_json(tmp_path_factory, images, capsys):
    from workbench.cli import main

    model = exported(tmp_path_factory, "savedmodel")
    assert main(["predict", str(model), *images[:2], "--top-k", "2", "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in parsed] == images[:2] and all(len(r["predictions"]) == 2 for r in parsed)
    assert main(["predict", str(model), images[0], "--top-k", "2"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == images[0] and table.count("%") == 2
    assert format_table(parsed).splitlines()[0] == images[0]


def test_bad_inputs_fail_with_the_file_named(tmp_path_factory, tmp_path, images, capsys):
    from workbench.cli import main

    run = tiny_run(tmp_path_factory)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.jpg: not an image"):
        predict(run, [text])
    with pytest.raises(ValueError, match=r"missing.png: image file not found"):
        predict(run, [tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="top_k"):
        predict(run, images, top_k=0)
    assert main(["predict", str(tmp_path / "nothing.tflite"), images[0]]) == 2
    err = capsys.readouterr().err
    assert "nothing.tflite: no such file" in err and "Traceback" not in err


def test_foreign_or_file_writing_saved_models_are_refused_before_loading(tmp_path):
    import tensorflow as tf

    from workbench.serving.model_files import ModelFileError

    marker = tmp_path / "written"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            tf.io.write_file(str(marker), image_bytes[0])
            return {"probabilities": tf.ones((tf.shape(image_bytes)[0], 2))}

    class Foreign(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
        def serve(self, x):
            return {"probabilities": tf.nn.softmax(x)}

    cases = (("writer", Writer(), "WriteFile"), ("foreign", Foreign(), "not a workbench SavedModel"))
    for name, module, message in cases:
        directory = tmp_path / name / "1"
        tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
        (directory / "labels.txt").write_text("a\nb\n")
        image = tmp_path / "x.png"
        from PIL import Image

        Image.new("RGB", (8, 8)).save(image)
        with pytest.raises(ModelFileError, match=message):
            predict(directory.parent, [image])
    assert not marker.exists()


def test_class_names_with_terminal_escapes_are_printed_escaped(tmp_path_factory, images, tmp_path, capsys):
    # D (issue 11): class names went raw into predict's table, so escape sequences in a folder name or a
    # labels.txt reached the terminal (here: retitle the window, then erase the line).
    import shutil

    from workbench.cli import main

    folder = tmp_path / "model"
    shutil.copytree(exported(tmp_path_factory, "keras").parent, folder)
    hostile = ["\x1b]0;pwned\x07blue", "green\x1b[2K", "red\u202e"]
    (folder / "labels.txt").write_text("\n".join(hostile) + "\n")
    assert main(["predict", str(folder / "model.keras"), images[0], "--top-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert "\\x1b]0;pwned\\x07blue" in table and "green\\x1b[2K" in table and "red\\u202e" in table
    results = predict(folder / "model.keras", images[:1], top_k=3)
    assert {p["class"] for p in results[0]["predictions"]} == set(hostile)  # the data itself is unchanged
