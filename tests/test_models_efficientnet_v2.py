"""EfficientNetV2 against keras.applications: parameter counts, layer names, loaded weights give the
same predictions, the official files and hashes, and the paper's multiply-adds.

Large variants are `slow` (L alone takes ~15 s to build on 2 cores): `pytest -m slow tests/test_models_efficientnet_v2.py`.
"""

import keras
import numpy as np
import pytest
from test_models_weights import _non_trivial

from workbench.models import build_model, get_variant
from workbench.models.builder import stage_plan
from workbench.models.figures import measure
from workbench.models.scaling import round_filters
from workbench.models.weights import KerasApplicationsFile, WeightsError

# keras.applications.EfficientNetV2* (weights=None) with the 1000-class top (issue 13)
KERAS_APPLICATIONS_PARAMS = {
    "b0v2": 7_200_312,
    "b1v2": 8_212_124,
    "b2v2": 10_178_374,
    "b3v2": 14_467_622,
    "sv2": 21_612_360,
    "mv2": 54_431_388,
    "lv2": 119_027_848,
}
KERAS_MODELS = {
    "b0v2": "EfficientNetV2B0",
    "b1v2": "EfficientNetV2B1",
    "b2v2": "EfficientNetV2B2",
    "b3v2": "EfficientNetV2B3",
    "sv2": "EfficientNetV2S",
    "mv2": "EfficientNetV2M",
    "lv2": "EfficientNetV2L",
}
# The paper's "FLOPs" (multiply-adds; Table 7, the automl README for B0–B3) at each variant's resolution.
PAPER_GMACS = {"b0v2": 0.72, "b1v2": 1.2, "b2v2": 1.7, "b3v2": 3.0, "sv2": 8.8, "mv2": 24.0, "lv2": 53.0}
CHEAP = ["b0v2"]


def _slow_unless_cheap(names):
    return [name if name in CHEAP else pytest.param(name, marks=pytest.mark.slow) for name in names]


@pytest.mark.parametrize("variant", _slow_unless_cheap(KERAS_APPLICATIONS_PARAMS))
def test_parameter_counts_equal_keras_applications(variant):
    model = build_model(variant, 1000, input_shape=(None, None, 3))
    assert model.count_params() == KERAS_APPLICATIONS_PARAMS[variant]


def _weighted(model):
    return [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights]


@pytest.mark.parametrize("variant", _slow_unless_cheap(KERAS_MODELS))
def test_layer_names_and_shapes_are_keras_applications_own(variant):
    ours = build_model(variant, 1000, input_shape=(64, 64, 3))
    theirs = getattr(keras.applications, KERAS_MODELS[variant])(weights=None, input_shape=(64, 64, 3))
    assert _weighted(ours) == _weighted(theirs)


@pytest.mark.parametrize("variant", _slow_unless_cheap(PAPER_GMACS))
def test_multiply_adds_match_the_paper(variant):
    # within 1% for B0–B3 and M; S and L differ from the paper's rounded figures by 5–6% (efficientnet_v2.py)
    assert measure(variant).macs / 1e9 == pytest.approx(PAPER_GMACS[variant], rel=0.07)


def test_published_table():
    """(width, depth, resolution, head dropout): keras.applications' sizes, the paper's dropout."""
    expected = {
        "b0v2": (1.0, 1.0, 224, 0.2, "efficientnetv2"),
        "b1v2": (1.0, 1.1, 240, 0.2, "efficientnetv2"),
        "b2v2": (1.1, 1.2, 260, 0.3, "efficientnetv2"),
        "b3v2": (1.2, 1.4, 300, 0.3, "efficientnetv2"),
        "sv2": (1.0, 1.0, 384, 0.2, "efficientnetv2-s"),
        "mv2": (1.0, 1.0, 480, 0.3, "efficientnetv2-m"),
        "lv2": (1.0, 1.0, 480, 0.4, "efficientnetv2-l"),
    }
    for name, row in expected.items():
        spec = get_variant(name)
        assert (spec.width, spec.depth, spec.resolution, spec.dropout, spec.family) == row
        assert spec.activation == "swish" and spec.architecture.stages[0].block == "fused_mbconv"


def test_fused_blocks_first_then_mbconv_with_squeeze_excitation():
    model = build_model("b0v2", 10, input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    # block1: fused without expansion, its one 3×3 conv is the projection and is followed by an activation
    assert model.get_layer("block1a_project_conv").kernel_size == (3, 3)
    assert "block1a_project_activation" in names and "block1a_expand_conv" not in names
    # block2: fused with expansion, the strided 3×3 expand conv replaces 1×1 + depthwise
    expand = model.get_layer("block2a_expand_conv")
    assert (expand.kernel_size, expand.strides) == ((3, 3), (2, 2))
    assert model.get_layer("block2a_project_conv").kernel_size == (1, 1)
    assert not [n for n in names if n.startswith(("block1", "block2", "block3")) and ("dwconv" in n or "_se_" in n)]
    # block4 on: MBConv, V2's depthwise name, squeeze-and-excitation at 0.25 of the input filters
    assert model.get_layer("block4a_dwconv2").strides == (2, 2)
    assert model.get_layer("block4a_se_reduce").filters == 12  # 48 · 0.25
    assert not [n for n in names if n.endswith("_pad")]  # V2 strides with "same" padding
    assert model.get_layer("stem_bn").momentum == 0.9


def test_v2_rounds_filters_without_v1_floor():
    # 16 · 1.2 = 19.2: V1's code never rounds below 90% of it (24), V2's takes the nearest multiple of 8
    assert round_filters(16, 1.2) == 24 and round_filters(16, 1.2, floor=None) == 16
    assert stage_plan(get_variant("b3v2"))[0]["filters_out"] == 16  # block1a


def test_keras_spellings_resolve():
    assert get_variant("EfficientNetV2B0").name == "b0v2"
    assert get_variant("efficientnetv2-s").name == "sv2"
    assert get_variant("efficientnet-v2-l").family == "efficientnetv2-l"


def _two_images(size):
    """Noise and a smooth coloured ramp, RGB in [0, 255]."""
    noise = np.random.default_rng(1).uniform(0, 255, (size, size, 3))
    ramp = np.broadcast_to(np.linspace(0, 255, size)[None, :, None], (size, size, 3)) * [1.0, 0.5, 0.2]
    return np.stack([noise, ramp]).astype("float32")


@pytest.mark.parametrize(
    "variant, size, file_name",
    [
        ("b0v2", 224, "efficientnetv2-b0.h5"),  # legacy HDF5 by layer name: the official files' format
        ("b0v2", 64, "b0v2.weights.h5"),  # Keras 3, by structure: what a user saves after fine-tuning
        ("sv2", 64, "efficientnetv2-s.h5"),  # S normalises to [-1, 1] where the B variants use ImageNet's mean/std
    ],
)
def test_keras_applications_weights_load_with_identical_predictions(tmp_path, variant, size, file_name):
    """keras.applications' V2 takes RGB in [0, 255] and normalises inside (include_preprocessing), as ours.

    Compared on logits: a random network's softmax saturates to the same one-hot output for any image, which
    would hide a weight landing in the wrong layer.
    """
    keras.utils.set_random_seed(0)  # the convolution kernels keep Keras' random initialisation
    reference = _non_trivial(
        getattr(keras.applications, KERAS_MODELS[variant])(weights=None, input_shape=(size,) * 2 + (3,))
    )
    path = tmp_path / file_name
    reference.save_weights(path) if file_name.endswith(".weights.h5") else reference.save(path)
    reference.get_layer("predictions").activation = keras.activations.linear
    ours = build_model(variant, 1000, input_shape=(size, size, 3), weights=str(path), classifier_activation=None)
    x = _two_images(size)
    expected = reference.predict(x, verbose=0)
    assert np.abs(expected[0] - expected[1]).max() > 1e-3 * np.abs(expected).max()  # logits depend on the image
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_weight_files_and_hashes_are_keras_applications_own():
    from keras.src.applications import efficientnet_v2 as reference

    ours = {"b0": "b0v2", "b1": "b1v2", "b2": "b2v2", "b3": "b3v2", "-s": "sv2", "-m": "mv2", "-l": "lv2"}
    sources = {key: get_variant(name).imagenet_weights for key, name in ours.items()}
    assert all(isinstance(source, KerasApplicationsFile) for source in sources.values())
    assert {key: (s.top_hash, s.notop_hash) for key, s in sources.items()} == reference.WEIGHTS_HASHES
    # keras.applications names its V2 files after its model: efficientnetv2-b0.h5, efficientnetv2-s_notop.h5
    assert sources["b0"].file_name(True) == "efficientnetv2-b0.h5"
    assert sources["-s"].file_name(False) == "efficientnetv2-s_notop.h5"
    assert {s.url for s in sources.values()} == {reference.BASE_WEIGHTS_PATH}


def test_imagenet_offline_fails_with_url_cache_path_and_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache: a download is needed
    with pytest.raises(WeightsError) as info:
        build_model("b0v2", weights="imagenet")
    message = str(info.value)
    source = get_variant("b0v2").imagenet_weights
    assert source.url + "efficientnetv2-b0.h5" in message
    assert str(tmp_path / "models" / "efficientnetv2-b0.h5") in message
    assert "21ecbf6da12460d5c40bb2f29ceb2188" in message
    assert "weights=None" in message
