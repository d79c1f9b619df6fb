"""`workbench export --tta` (issue 12): flip test-time augmentation as extra SavedModel signatures, never the default.

A TTA export holds `serving_tta` (image bytes) and `serving_tta_rgb` (float images) beside the usual
`serving_default` and `serving_rgb`, which it leaves exactly as they are; an export without `--tta` holds
no more than those two. The model card says which it is, and the hostile-model checks accept both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_tiny_run import RESOLUTION, exported, split_images, tiny_run

PLAIN_SIGNATURES = {"serving_default", "serving_rgb"}
TTA_SIGNATURES = {"serving_tta", "serving_tta_rgb"}


@pytest.fixture(scope="module")
def tta_export(tmp_path_factory) -> Path:
    """The tiny run exported through the command line with `--tta` (so the flag reaches `export(tta=True)`)."""
    from workbench.cli import main

    out = tmp_path_factory.mktemp("tta_export") / "tiny"
    assert main(["export", str(tiny_run(tmp_path_factory)), "--format", "savedmodel", "--out", str(out), "--tta"]) == 0
    return out / "1"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import keras

    return keras.saving.load_model(tiny_run(tmp_path_factory) / "model.keras", safe_mode=True)


def _asymmetric_images() -> np.ndarray:
    """Images the tiny model scores differently from their mirrors: red left and blue right halves, noise,
    and a left-to-right green ramp, at the model's resolution."""
    images = np.zeros((3, RESOLUTION, RESOLUTION, 3), np.float32)
    images[0, :, : RESOLUTION // 2, 0] = 230
    images[0, :, RESOLUTION // 2 :, 2] = 230
    images[1] = np.random.default_rng(0).integers(0, 256, (RESOLUTION, RESOLUTION, 3))
    images[2, :, :, 1] = np.linspace(0, 255, RESOLUTION)[None, :]
    return images


def _mirror_mean(model, images: np.ndarray) -> np.ndarray:
    """The specification: the mean of the model's probabilities on the images and on their horizontal mirrors."""
    plain = model.predict(images, verbose=0)
    mirrored = model.predict(images[:, :, ::-1, :], verbose=0)
    return (plain.astype(np.float64) + mirrored) / 2


def _signatures(version_dir: Path) -> dict:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    [graph] = saved_model.meta_graphs
    return {name: sig for name, sig in graph.signature_def.items() if name.startswith("serving")}


def test_tta_signatures_average_the_model_over_the_image_and_its_mirror(tta_export, model, tmp_path_factory):
    import tensorflow as tf

    from workbench.serving.imaging import load_files

    loaded = tf.saved_model.load(str(tta_export))
    images = _asymmetric_images()
    expected = _mirror_mean(model, images)
    # Else averaging would be untested: the mirrors must change the model's answer by far more than 1e-5.
    assert np.abs(model.predict(images, verbose=0) - model.predict(images[:, :, ::-1, :], verbose=0)).max() > 1e-3
    out = loaded.signatures["serving_tta_rgb"](images=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    assert out["class_index"].numpy().tolist() == expected.argmax(1).tolist()

    # The image-bytes signature: decoded and resized as serving_default does, then the same average.
    files = split_images(tmp_path_factory)
    encoded = tf.constant([Path(f).read_bytes() for f in files])
    out = loaded.signatures["serving_tta"](image_bytes=encoded)
    expected = _mirror_mean(model, load_files(files, RESOLUTION))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    labels = (tiny_run(tmp_path_factory) / "labels.txt").read_text().split()
    assert [name.decode() for name in out["class_name"].numpy()] == [labels[i] for i in expected.argmax(1)]


def test_default_signatures_are_unchanged_by_tta(tta_export, model, tmp_path_factory):
    import tensorflow as tf

    plain_export = exported(tmp_path_factory, "savedmodel")
    plain, tta = _signatures(plain_export), _signatures(tta_export)
    for name in PLAIN_SIGNATURES:  # same inputs and outputs: names, dtypes and shapes
        assert tta[name].inputs == plain[name].inputs and tta[name].outputs == plain[name].outputs, name
        assert tta[name].method_name == plain[name].method_name, name
    images = _asymmetric_images()
    encoded = tf.constant([Path(f).read_bytes() for f in split_images(tmp_path_factory)])
    defaults = []
    for version_dir in (plain_export, tta_export):
        signatures = tf.saved_model.load(str(version_dir)).signatures
        # The plain model, not the average: serving_default and serving_rgb never augment.
        rgb = signatures["serving_rgb"](images=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(rgb, model.predict(images, verbose=0), atol=1e-5)
        assert np.abs(rgb - _mirror_mean(model, images)).max() > 1e-4
        defaults.append(signatures["serving_default"](image_bytes=encoded)["probabilities"].numpy())
    np.testing.assert_allclose(defaults[1], defaults[0], atol=1e-6)


def test_export_without_tta_has_no_extra_signature_and_the_card_says_so(tta_export, tmp_path_factory):
    import tensorflow as tf

    plain_export = exported(tmp_path_factory, "savedmodel")
    assert set(_signatures(plain_export)) == PLAIN_SIGNATURES
    assert set(tf.saved_model.load(str(plain_export)).signatures) == PLAIN_SIGNATURES
    card = json.loads((plain_export / "model_card.json").read_text())
    assert card["tta"] is None and set(card["signatures"]) == PLAIN_SIGNATURES
    assert "## Test-time augmentation\n\n* None" in (plain_export / "model_card.md").read_text()

    assert set(_signatures(tta_export)) == PLAIN_SIGNATURES | TTA_SIGNATURES
    card = json.loads((tta_export / "model_card.json").read_text())
    assert card["tta"] == {"mode": "flip", "views": 2, "signatures": ["serving_tta", "serving_tta_rgb"]}
    assert set(card["signatures"]) == PLAIN_SIGNATURES | TTA_SIGNATURES
    markdown = (tta_export / "model_card.md").read_text()
    assert "Mode `flip`" in markdown and "`serving_tta`, `serving_tta_rgb`" in markdown


def test_tta_export_passes_the_hostile_model_checks(tta_export, model, tmp_path_factory):
    """Vetted from its protobuf like any SavedModel (the allowlist, no op outside it), then opened by predict."""
    from tensorflow.core.protobuf import saved_model_pb2

    from workbench.serving.formats.savedmodel import disallowed_ops, inspect_saved_model
    from workbench.serving.imaging import load_files
    from workbench.serving.predict import predict

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((tta_export / "saved_model.pb").read_bytes())
    assert disallowed_ops(saved_model.meta_graphs[0]) == {}
    inspect_saved_model(tta_export)
    files = split_images(tmp_path_factory)[:2]
    results = predict(tta_export.parent, files, top_k=3)  # the base folder: its newest version, vetted first
    expected = model.predict(load_files(files, RESOLUTION), verbose=0)  # predict serves serving_default
    for result, row in zip(results, expected, strict=True):
        top = result["predictions"][0]
        assert top["index"] == row.argmax() and top["probability"] == pytest.approx(row.max(), abs=1e-5)


@pytest.mark.parametrize("format", ["keras", "tflite", "tflite-int8"])
def test_tta_is_refused_for_formats_with_a_single_entry_point(format, tmp_path):
    """No room for a second entry point, and TTA never replaces the default: refused before the run is read."""
    from workbench.serving.export import export

    with pytest.raises(ValueError, match=rf"--tta: the {format} format has a single entry point.*--format savedmodel"):
        export(tmp_path / "no-such-run", format, out=tmp_path / "out", tta=True)
    assert not (tmp_path / "out").exists()
