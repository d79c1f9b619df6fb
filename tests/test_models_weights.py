"""Weights: keras.applications files by name, the shipped Lite0 checkpoint, local files, clear failures."""

import keras
import numpy as np
import pytest
from PIL import Image

from workbench.models import build_model
from workbench.models.imagenet import decode_predictions, imagenet_class_names
from workbench.models.weights import KERAS_WEIGHTS_URL, KerasApplicationsFile, WeightsError


def _non_trivial(reference, seed=0):
    """Random BN statistics and classifier, so that a weight landing in the wrong layer shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )
    kernel, bias = reference.get_layer("predictions").get_weights()
    reference.get_layer("predictions").set_weights([rng.normal(0, 1.0, kernel.shape), rng.normal(0, 0.1, bias.shape)])
    return reference


def _keras_applications_b0(classes=1000):
    """keras.applications' B0 with ImageNet normalisation on its own [0, 1] scale, as it sets it for weights="imagenet"
    (its Normalization layer starts unadapted, behind a Rescaling(1/255)). Seeded: its random kernels must not depend
    on which tests ran before (an unlucky draw saturates the softmax to the same output for every image)."""
    keras.utils.set_random_seed(0)
    reference = _non_trivial(keras.applications.EfficientNetB0(weights=None, classes=classes))
    norm = next(layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2, np.array(0)])
    norm.finalize_state()
    return reference


def _keras_applications_b0_file(tmp_path, classes=1000):
    """A keras.applications B0 saved in the legacy .h5 layout of the official ImageNet files."""
    reference = _keras_applications_b0(classes)
    path = tmp_path / "efficientnetb0.h5"
    reference.save(path)  # legacy HDF5: layer names + weight names, as keras.applications' files
    return reference, path


def test_keras_applications_weight_file_loads_by_name_with_identical_outputs(tmp_path):
    reference, path = _keras_applications_b0_file(tmp_path)
    ours = build_model("b0", 1000, weights=str(path))
    x = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(ours.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def _two_images(size=224):
    """Noise and a smooth coloured ramp, RGB in [0, 255]."""
    noise = np.random.default_rng(1).uniform(0, 255, (size, size, 3))
    ramp = np.broadcast_to(np.linspace(0, 255, size)[None, :, None], (size, size, 3)) * [1.0, 0.5, 0.2]
    return np.stack([noise, ramp]).astype("float32")


def test_keras3_weights_file_of_keras_applications_keeps_our_normalisation(tmp_path):
    """Issue 13: a `.weights.h5` saved by keras.applications holds its normalisation on the [0, 1] scale
    (behind its Rescaling(1/255)); loaded as is into our [0, 255] model, every prediction was wrong."""
    reference = _keras_applications_b0()
    path = tmp_path / "b0.weights.h5"
    reference.save_weights(path)
    ours = build_model("b0", num_classes=1000, weights=str(path))
    np.testing.assert_allclose(
        ours.get_layer("normalization").mean.numpy().ravel(), [123.675, 116.28, 103.53], rtol=1e-6
    )
    x = _two_images()  # both models take RGB in [0, 255]
    expected = reference.predict(x, verbose=0)
    # the outputs depend on the image, far beyond the tolerance below (the normalisation bug moved them by up to 1)
    assert np.abs(expected[0] - expected[1]).max() > 20 * 1e-6
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-6)


def test_a_local_file_must_fit_the_head_too(tmp_path):
    _, path = _keras_applications_b0_file(tmp_path)
    with pytest.raises(WeightsError, match="layer 'predictions' expects weight shapes"):
        build_model("b0", 7, weights=str(path))


def test_legacy_h5_file_of_our_own_model_loads_its_head(tmp_path):
    model = build_model("phi=-3", 5, input_shape=(32, 32, 3))
    path = tmp_path / "own.h5"
    model.save(path)  # legacy HDF5 layout, by layer name
    loaded = build_model("phi=-3", 5, input_shape=(32, 32, 3), weights=str(path))
    np.testing.assert_array_equal(
        loaded.get_layer("predictions").get_weights()[0], model.get_layer("predictions").get_weights()[0]
    )


def test_a_file_for_another_variant_names_the_first_mismatching_layer(tmp_path):
    _, path = _keras_applications_b0_file(tmp_path)
    with pytest.raises(
        WeightsError, match="no weights for layer 'block1b_dwconv'"
    ) as info:  # B2 has 2 blocks in stage 1
        build_model("b2", 1000, weights=str(path))
    assert str(path) in str(info.value)


def test_own_weights_file_round_trips_and_a_misfit_is_named(tmp_path):
    model = build_model("phi=-3", 5, input_shape=(32, 32, 3))
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    loaded = build_model("phi=-3", 5, input_shape=(32, 32, 3), weights=str(path))
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(WeightsError, match="layer 'predictions' expects weight shapes"):
        build_model("phi=-3", 6, input_shape=(32, 32, 3), weights=str(path))
    with pytest.raises(WeightsError, match="not found"):
        build_model("phi=-3", 5, weights=str(tmp_path / "missing.h5"))
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(WeightsError, match="not an HDF5 weights file"):
        build_model("phi=-3", 5, input_shape=(32, 32, 3), weights=str(tmp_path / "junk.h5"))


def test_imagenet_offline_fails_with_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache: a download is needed
    with pytest.raises(WeightsError) as info:
        build_model("b0", 10, weights="imagenet")
    message = str(info.value)
    assert "efficientnetb0_notop.h5" in message
    assert str(tmp_path / "models" / "efficientnetb0_notop.h5") in message
    assert "weights=None" in message


def test_weight_files_and_hashes_are_keras_applications_own():
    from keras.src.applications import efficientnet as reference

    from workbench.models import get_variant

    sources = {name: get_variant(name).imagenet_weights for name in reference.WEIGHTS_HASHES}
    assert all(isinstance(source, KerasApplicationsFile) for source in sources.values())
    assert {name: (s.top_hash, s.notop_hash) for name, s in sources.items()} == reference.WEIGHTS_HASHES
    # keras.applications names its files after its model: efficientnetb0.h5, efficientnetb0_notop.h5
    assert {s.file_name(False) for s in sources.values()} == {f"efficientnet{name}_notop.h5" for name in sources}
    assert KERAS_WEIGHTS_URL == reference.BASE_WEIGHTS_PATH


@pytest.mark.parametrize("variant", ["lite1", "lite4", "phi=0.5"])
def test_variants_without_imagenet_weights_say_so(variant):
    with pytest.raises(WeightsError, match=r"not available for .*weights=None"):
        build_model(variant, 10, weights="imagenet")


def _centre_crop(image: np.ndarray, size: int = 224, fraction: float = 0.875) -> np.ndarray:
    pil = Image.fromarray(image)
    w, h = pil.size
    side = int(min(w, h) * fraction)
    box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
    return np.asarray(pil.crop(box).resize((size, size), Image.BICUBIC), dtype="float32")


def test_lite0_imagenet_golden_photos():
    """Real photos shipped by scikit-learn: china.jpg is a palace (698), flower.jpg a daisy (985)."""
    from sklearn.datasets import load_sample_image

    model = build_model("lite0", 1000, weights="imagenet")
    batch = np.stack([_centre_crop(load_sample_image("china.jpg")), _centre_crop(load_sample_image("flower.jpg"))])
    decoded = decode_predictions(model.predict(batch, verbose=0), top=5)
    assert 698 in [i for i, _, _ in decoded[0]], decoded[0]
    assert 985 in [i for i, _, _ in decoded[1]], decoded[1]
    assert decoded[0][0][1] == "palace" and decoded[1][0][1] == "daisy"


def test_lite0_imagenet_backbone_under_a_new_head():
    full = build_model("lite0", 1000, weights="imagenet", input_shape=(64, 64, 3))
    small = build_model("lite0", 3, weights="imagenet", input_shape=(64, 64, 3))
    np.testing.assert_array_equal(
        full.get_layer("block7a_project_conv").get_weights()[0],
        small.get_layer("block7a_project_conv").get_weights()[0],
    )


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0].startswith("tench") and names[985] == "daisy"


def test_torch_checkpoint_reader_refuses_code(tmp_path):
    import pickle

    from workbench.models.torch_checkpoint import load_legacy_state_dict

    evil = tmp_path / "evil.pth"
    with evil.open("wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load os.system"):
        load_legacy_state_dict(evil)
    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a legacy"):
        load_legacy_state_dict(tmp_path / "plain.pth")


def test_imagenet_backbone_loads_under_a_new_head(tmp_path, monkeypatch):
    """weights="imagenet" with 7 classes: the no-top file's backbone, a fresh 7-way head."""
    from workbench.models import weights as weights_lib

    reference, path = _keras_applications_b0_file(tmp_path)
    asked = []
    monkeypatch.setattr(
        weights_lib, "fetch_keras_imagenet", lambda variant, include_top: asked.append((variant, include_top)) or path
    )
    ours = build_model("b0", 7, weights="imagenet")
    assert asked == [("b0", False)]
    np.testing.assert_array_equal(
        ours.get_layer("top_conv").get_weights()[0], reference.get_layer("top_conv").get_weights()[0]
    )
    assert ours.output.shape == (None, 7)
