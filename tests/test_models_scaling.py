"""Compound scaling as the EfficientNet paper defines it, and the variant registry."""

import math

import pytest

from workbench.models import ALPHA, BETA, GAMMA, custom_variant, get_variant, published_names
from workbench.models.scaling import PAPER_FAMILY, ScalingFamily, dropout_for_phi, round_filters, round_repeats


@pytest.mark.parametrize(
    "filters, width, expected",
    [
        (32, 1.0, 32),
        (32, 1.1, 32),  # 35.2 rounds down to 32, within 10%
        (40, 1.1, 48),  # 44 rounds half up
        (1280, 2.0, 2560),
        (112, 1.4, 160),
        (320, 1.8, 576),
        (16, 0.5, 8),
        (4, 1.0, 8),  # never below the divisor
        (10, 1.0, 16),  # 8 would be 20% below the target: bumped up
        (358, 0.1, 40),  # 35.8 → 32 is >10% below: bumped to 40
    ],
)
def test_round_filters_known_values(filters, width, expected):
    assert round_filters(filters, width) == expected
    assert round_filters(filters, width) % 8 == 0
    assert round_filters(filters, width) >= 0.9 * filters * width


@pytest.mark.parametrize(
    "repeats, depth, expected", [(1, 1.0, 1), (1, 1.1, 2), (2, 1.1, 3), (3, 3.1, 10), (4, 1.8, 8), (1, 0.5, 1)]
)
def test_round_repeats_is_ceil(repeats, depth, expected):
    assert round_repeats(repeats, depth) == expected


def test_paper_coefficients_double_flops_per_phi():
    assert (ALPHA, BETA, GAMMA) == (1.2, 1.1, 1.15)
    assert PAPER_FAMILY.flops_factor() == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("phi", [-2.0, -0.5, 0.0, 1.5, 3.0])
def test_custom_phi_follows_the_formula(phi):
    spec = custom_variant(phi)
    assert spec.depth == pytest.approx(1.2**phi)
    assert spec.width == pytest.approx(1.1**phi)
    assert spec.resolution % 8 == 0
    assert abs(spec.resolution - 224 * 1.15**phi) <= 4
    assert spec.name == f"phi={phi:g}"


def test_phi_is_accepted_as_a_name_and_as_an_argument():
    assert get_variant("phi=1.5") == get_variant(phi=1.5)
    assert get_variant("phi=1.5").resolution == 280  # 224·1.15^1.5 = 276.2 → 280
    assert get_variant("phi=-1").resolution == 192


def test_published_table_is_the_papers():
    expected = {
        "b0": (1.0, 1.0, 224, 0.2),
        "b1": (1.0, 1.1, 240, 0.2),
        "b2": (1.1, 1.2, 260, 0.3),
        "b3": (1.2, 1.4, 300, 0.3),
        "b4": (1.4, 1.8, 380, 0.4),
        "b5": (1.6, 2.2, 456, 0.4),
        "b6": (1.8, 2.6, 528, 0.5),
        "b7": (2.0, 3.1, 600, 0.5),
        "lite0": (1.0, 1.0, 224, 0.2),
        "lite1": (1.0, 1.1, 240, 0.2),
        "lite2": (1.1, 1.2, 260, 0.3),
        "lite3": (1.2, 1.4, 280, 0.3),
        "lite4": (1.4, 1.8, 300, 0.3),
    }
    # EfficientNetV2's rows follow (tests/test_models_efficientnet_v2.py checks their table)
    assert published_names() == [*expected, "b0v2", "b1v2", "b2v2", "b3v2", "sv2", "mv2", "lv2"]
    for name, (width, depth, resolution, dropout) in expected.items():
        spec = get_variant(name)
        assert (spec.width, spec.depth, spec.resolution, spec.dropout) == (width, depth, resolution, dropout)
        lite = name.startswith("lite")
        assert spec.family == ("efficientnet-lite" if lite else "efficientnet")
        assert spec.activation == ("relu6" if lite else "swish")
        assert {stage.se_ratio for stage in spec.architecture.stages} == ({None} if lite else {0.25})


def test_custom_dropout_interpolates_the_published_values():
    for phi in range(8):
        assert dropout_for_phi(phi) == pytest.approx(get_variant(f"b{phi}").dropout, abs=0.05 + 1e-9)


@pytest.mark.parametrize("alias", ["B0", "efficientnet-b0", "EfficientNetB0", "efficientnet_b0"])
def test_aliases(alias):
    assert get_variant(alias).name == "b0"


@pytest.mark.parametrize("bad", ["b8", "resnet50", "phi=", "lite5", ""])
def test_unknown_variant_lists_the_valid_names(bad):
    with pytest.raises(ValueError) as info:
        get_variant(bad)
    message = str(info.value)
    assert repr(bad) in message and "b0" in message and "lite4" in message and "phi=" in message


def test_saved_family_builds_at_any_phi(tmp_path, monkeypatch):
    from workbench.models.families import list_families, save_family

    monkeypatch.setenv("WORKBENCH_FAMILIES", str(tmp_path))
    family = ScalingFamily(
        name="mine", alpha=1.3, beta=1.05, gamma=1.1, base_width=0.5, base_depth=0.5, base_resolution=128
    )
    save_family(family)
    assert list_families() == ["mine"]
    spec = get_variant("mine:phi=1")
    assert (spec.width, spec.depth, spec.resolution) == (pytest.approx(0.525), pytest.approx(0.65), 144)
    assert get_variant("mine:phi=0").resolution == 128
    with pytest.raises(ValueError, match="unknown scaling family 'other'"):
        get_variant("other:phi=1")


def test_resolution_rounding():
    assert all(custom_variant(p).resolution % 8 == 0 for p in [x / 4 for x in range(-8, 29)])
    assert math.isclose(ScalingFamily("x").coefficients(0)[0], 1.0)
