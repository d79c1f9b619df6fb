"""The builder against its published references: keras.applications, the paper's FLOPs."""

import keras
import numpy as np
import pytest

from workbench.models import build_model
from workbench.models.figures import format_table, measure
from workbench.models.flops import count_macs
from workbench.models.surgery import (
    block_names,
    classifier_head,
    feature_extractor,
    freeze_backbone,
    unfreeze_top_blocks,
)

KERAS_APPLICATIONS_PARAMS = {  # keras.applications.EfficientNetB* with the 1000-class top
    "b0": 5_330_571,
    "b1": 7_856_239,
    "b2": 9_177_569,
    "b3": 12_320_535,
    "b4": 19_466_823,
    "b5": 30_562_527,
    "b6": 43_265_143,
    "b7": 66_658_687,
}


@pytest.mark.parametrize("variant", list(KERAS_APPLICATIONS_PARAMS))
def test_parameter_counts_equal_keras_applications(variant):
    model = build_model(variant, 1000, input_shape=(None, None, 3))
    assert model.count_params() == KERAS_APPLICATIONS_PARAMS[variant]


def test_layer_names_are_keras_applications_names():
    ours = build_model("b0", 1000)
    theirs = keras.applications.EfficientNetB0(weights=None)

    def weighted(m):  # Keras numbers a second Normalization layer in a process: compare by type
        return [
            (
                layer.name if not isinstance(layer, keras.layers.Normalization) else "normalization",
                [tuple(w.shape) for w in layer.weights],
            )
            for layer in m.layers
            if layer.weights
        ]

    assert weighted(ours) == weighted(theirs)


@pytest.mark.parametrize(
    "variant, published_gmacs, tolerance",
    [("b0", 0.39, 0.03), ("b7", 37.0, 0.03), ("lite0", 0.40, 0.06)],  # paper Table 2; TF Lite README
)
def test_flops_match_published_figures(variant, published_gmacs, tolerance):
    row = measure(variant)
    assert row.macs / 1e9 == pytest.approx(published_gmacs, rel=tolerance)
    assert row.flops == 2 * row.macs


def test_flops_scale_with_resolution_squared():
    # lite0: no squeeze-excitation, whose 1×1 convs do not grow with the image
    small = count_macs(build_model("lite0", 10, input_shape=(128, 128, 3)))  # sizes divisible by 32: no ceil
    large = count_macs(build_model("lite0", 10, input_shape=(256, 256, 3)))
    head = 1280 * 10
    assert (large - head) / (small - head) == pytest.approx(4.0, rel=0.02)


def test_family_table_formats_every_row():
    rows = [measure("lite0"), measure("phi=-2")]
    table = format_table(rows)
    assert "lite0" in table and "phi=-2" in table and "4,694,031" in table


def test_normalisation_happens_inside_the_model_once():
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    b = build_model("b0", 3, input_shape=(32, 32, 3))
    normalised = keras.Model(b.input, b.get_layer("normalization").output)(x).numpy()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(normalised, (x / 255 - mean) / std, rtol=1e-4, atol=1e-4)
    lite = build_model("lite0", 3, input_shape=(32, 32, 3))
    normalised = keras.Model(lite.input, lite.get_layer("normalization").output)(x).numpy()
    np.testing.assert_allclose(normalised, (x - 127) / 128, rtol=1e-5, atol=1e-5)
    assert sum(isinstance(layer, (keras.layers.Normalization, keras.layers.Rescaling)) for layer in b.layers) == 1


def test_lite_variants_use_relu6_and_no_squeeze_excitation():
    model = build_model("lite2", 5, input_shape=(64, 64, 3))
    assert not [layer for layer in model.layers if "se_" in layer.name]
    assert {layer.activation.__name__ for layer in model.layers if isinstance(layer, keras.layers.Activation)} == {
        "relu6"
    }
    # stem and head are not scaled, the first and last stages keep one block
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("top_conv").filters == 1280
    names = block_names(model)
    assert [n for n in names if n.startswith("block1")] == ["block1a"]
    assert [n for n in names if n.startswith("block7")] == ["block7a"]


def test_drop_connect_only_on_identity_blocks_and_scaled_over_depth():
    model = build_model("b0", 10, input_shape=(64, 64, 3), drop_connect_rate=0.2)
    drops = {layer.name: layer.rate for layer in model.layers if layer.name.endswith("_drop")}
    adds = {layer.name[: -len("add")] for layer in model.layers if layer.name.endswith("_add")}
    assert {n[: -len("drop")] for n in drops} == adds  # every identity block, and only those
    rates = list(drops.values())
    assert rates == sorted(rates) and 0 < rates[0] < rates[-1] < 0.2


def test_surgery_freezes_by_block_and_keeps_batchnorm_frozen():
    model = build_model("phi=-3", 4, input_shape=(32, 32, 3))
    names = block_names(model)
    assert names[0] == "stem" and names[-1] == "top" and names[1] == "block1a"
    freeze_backbone(model)
    assert [w.path for w in model.trainable_weights] == [w.path for w in model.get_layer("predictions").weights]
    chosen = unfreeze_top_blocks(model, 2)
    assert chosen == names[-2:]
    trainable_layers = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable_layers == {
        layer.name
        for layer in model.layers
        if layer.weights
        and not isinstance(layer, keras.layers.BatchNormalization)
        and (layer.name.startswith(chosen[0]) or layer.name.startswith("top_") or layer.name == "predictions")
    }
    assert all(not layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_feature_extractor_and_head_compose_to_the_model():
    model = build_model("phi=-3", 4, input_shape=(32, 32, 3))
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    features = feature_extractor(model)(x)
    assert features.shape == (3, model.get_layer("top_conv").filters)
    np.testing.assert_allclose(classifier_head(model)(features), model(x), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("b0", 0)
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        build_model("b0", 2, input_shape=(32, 32))
    with pytest.raises(ValueError, match="either"):
        build_model("b0", 2, phi=1.0)
