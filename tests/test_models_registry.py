"""The family registry: a family is data, one registration makes it buildable everywhere."""

import dataclasses

import pytest

from workbench.models import build_model, get_variant, published_names, register_family, registered_families, registry
from workbench.models.families import check_family_name
from workbench.models.family import Family, NamedVariant, Normalization, Stage
from workbench.models.surgery import block_names
from workbench.models.weights import WeightsError

TINY = Family(
    name="tiny",
    description="two stages, for tests",
    stages=(
        Stage(kernel_size=3, repeats=1, filters_in=16, filters_out=16, expand_ratio=1, strides=1),
        Stage(kernel_size=5, repeats=2, filters_in=16, filters_out=24, expand_ratio=4, strides=2, se_ratio=None),
    ),
    stem_filters=16,
    head_filters=64,
    activation="relu",
    normalization=Normalization(mean=(127.0,) * 3, std=(128.0,) * 3),
    variants=(NamedVariant("tiny0", 1.0, 1.0, 64, 0.1, params=0, macs=0),),
)


@pytest.fixture
def scratch_registry(monkeypatch):
    """The built-in families in a registry copy that the test may add to."""
    registered_families()
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))


def test_the_builtin_families_in_order():
    assert [f.name for f in registered_families()] == [
        "efficientnet",
        "efficientnet-lite",
        "efficientnetv2",
        "efficientnetv2-s",
        "efficientnetv2-m",
        "efficientnetv2-l",
    ]
    assert published_names() == [v.name for f in registered_families() for v in f.variants]


def test_one_registration_makes_a_new_family_buildable(scratch_registry):
    register_family(TINY)
    assert published_names()[-1] == "tiny0" and get_variant("tiny0").family == "tiny"
    model = build_model("tiny0", 3)
    assert model.input.shape == (None, 64, 64, 3)
    assert block_names(model) == ["stem", "block1a", "block2a", "block2b", "top"]
    assert model.get_layer("stem_conv").filters == 16 and model.get_layer("top_conv").filters == 64
    assert not [layer.name for layer in model.layers if layer.name.startswith("block2") and "_se_" in layer.name]
    assert model.get_layer("block1a_se_reduce").filters == 4  # 16 · 0.25
    with pytest.raises(WeightsError, match=r"not available for 'tiny0'.*they exist for b0, .*lite0, b0v2, .*lv2\."):
        build_model("tiny0", 3, weights="imagenet")


def test_names_must_be_new(scratch_registry):
    with pytest.raises(ValueError, match="'efficientnet-lite': a family of that name is registered"):
        register_family(dataclasses.replace(TINY, name="efficientnet-lite"))
    with pytest.raises(ValueError, match=r"variant names \['b0'\] are taken"):
        register_family(dataclasses.replace(TINY, variants=(dataclasses.replace(TINY.variants[0], name="b0"),)))
    with pytest.raises(ValueError, match="registered family"):
        check_family_name("efficientnet-lite")  # a saved family may not shadow a registered one


def test_an_unknown_block_type_is_named(scratch_registry):
    stage = dataclasses.replace(TINY.stages[0], block="ghost_conv")
    register_family(dataclasses.replace(TINY, stages=(stage,)))
    with pytest.raises(ValueError, match=r"unknown block type 'ghost_conv'.*known: mbconv, fused_mbconv"):
        build_model("tiny0", 3)


def test_phi_needs_a_family_with_a_scaling_rule():
    assert get_variant("efficientnet:phi=1.5") == get_variant("phi=1.5")
    with pytest.raises(ValueError, match=r"'efficientnet-lite' has no compound-scaling rule.*lite0"):
        get_variant("efficientnet-lite:phi=1")
