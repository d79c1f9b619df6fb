"""Specification of the `autoaugment` preset: the published ImageNet policy as data, and what each of its
operations does to an image (tiny tensors, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import autoaugment as aa
from pipelines.augment import AUGMENT_PRESETS


def test_policy_is_25_sub_policies_of_two_valid_steps():
    assert len(aa.IMAGENET_POLICY) == 25
    for sub in aa.IMAGENET_POLICY:
        assert len(sub) == 2
        for name, probability, level in sub:
            assert name in aa.OPERATIONS
            assert 0.0 <= probability <= 1.0
            assert isinstance(level, int) and 0 <= level < aa.LEVELS


def test_policy_starts_and_ends_as_published():
    assert aa.IMAGENET_POLICY[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert aa.IMAGENET_POLICY[-1] == (("Equalize", 0.8, 8), ("Equalize", 0.6, 3))
    used = {step[0] for sub in aa.IMAGENET_POLICY for step in sub}
    assert used == set(aa.OPERATIONS)  # every operation is used, none is missing


def test_levels_map_onto_the_papers_ranges():
    assert [aa.posterize_bits(level) for level in (0, 5, 6, 7, 8, 9)] == [8, 6, 5, 5, 4, 4]
    assert aa.solarize_threshold(0) == 256.0 and aa.solarize_threshold(9) == 0.0
    assert aa.solarize_threshold(5) == pytest.approx(113.78, abs=0.01)


@pytest.fixture(scope="module")
def ramp():
    """An 8x8 RGB image whose pixels span 40..200 (not the full range), red ramping along x."""
    x = np.linspace(40, 200, 8, dtype=np.float32)
    image = np.stack([np.tile(x, (8, 1)), np.tile(x[:, None], (1, 8)), np.full((8, 8), 100, np.float32)], -1)
    return image


def run(name, image, level, sign=1.0):
    return np.asarray(aa.apply_operation(name, image, level, sign))


def test_invert_and_solarize(ramp):
    np.testing.assert_allclose(run("Invert", ramp, 0), 255 - ramp)
    solar = run("Solarize", ramp, 5)  # threshold 113.8: bright pixels inverted, dark ones kept
    bright = ramp >= aa.solarize_threshold(5)
    np.testing.assert_allclose(solar[bright], 255 - ramp[bright])
    np.testing.assert_allclose(solar[~bright], ramp[~bright])
    np.testing.assert_allclose(run("Solarize", ramp, 0), ramp)  # level 0 inverts nothing


def test_posterize_keeps_the_top_bits(ramp):
    out = run("Posterize", ramp, 9)  # 4 bits kept: multiples of 16
    assert np.all(out % 16 == 0)
    assert np.all(np.abs(out - ramp) < 16)
    np.testing.assert_allclose(run("Posterize", ramp, 0), np.round(ramp))


def test_autocontrast_and_equalize_spread_the_range(ramp):
    out = run("AutoContrast", ramp, 0)
    assert out[..., 0].min() == pytest.approx(0) and out[..., 0].max() == pytest.approx(255)
    np.testing.assert_allclose(out[..., 2], ramp[..., 2])  # a constant channel is left alone
    narrow = np.random.default_rng(0).integers(100, 140, (32, 32, 3)).astype(np.float32)  # 1024 pixels, 40 levels
    eq = run("Equalize", narrow, 0)
    assert eq.max() - eq.min() > 200  # spread over nearly the whole range
    order = np.argsort(narrow[..., 0], axis=None, kind="stable")
    assert np.all(np.diff(eq[..., 0].ravel()[order]) >= 0)  # monotone: the order of grey levels is kept
    np.testing.assert_allclose(run("Equalize", ramp, 0), ramp)  # too few pixels per level: PIL leaves it


def test_enhancements_change_saturation_contrast_and_sharpness(ramp):
    grey_spread = lambda im: np.abs(im - im.mean(axis=-1, keepdims=True)).mean()  # noqa: E731
    assert grey_spread(run("Color", ramp, 9, -1.0)) < 0.2 * grey_spread(ramp)  # factor 0.1: nearly grey
    np.testing.assert_allclose(run("Color", ramp, 0), ramp, atol=1e-3)  # level 0 is the identity
    assert run("Contrast", ramp, 8, 1.0).std() > ramp.std()
    assert run("Contrast", ramp, 8, -1.0).std() < ramp.std()
    noisy = ramp.copy()
    noisy[4, 4] = 255.0
    sharper = run("Sharpness", noisy, 9, 1.0)
    assert sharper[4, 4, 1] > noisy[4, 4, 1] - 1e-3 and sharper[4, 5, 1] < noisy[4, 5, 1]
    np.testing.assert_allclose(sharper[0], np.clip(noisy[0], 0, 255), atol=1e-3)  # the border stays


def test_geometric_operations_move_pixels_and_fill_grey(ramp):
    np.testing.assert_allclose(run("Rotate", ramp, 0), ramp, atol=1e-3)
    rotated = run("Rotate", ramp, 9)  # 30°: the corners leave the image and are filled grey
    assert rotated[0, 0, 2] == pytest.approx(aa.FILL, abs=30) and not np.allclose(rotated, ramp)
    sheared = run("ShearX", ramp, 9)
    np.testing.assert_allclose(sheared[0], ramp[0], atol=1e-3)  # row 0 does not move
    assert not np.allclose(sheared[-1], ramp[-1])


def test_the_preset_applies_the_policy_per_image_deterministically(ramp):
    import tensorflow as tf

    preset = AUGMENT_PRESETS["autoaugment"]
    assert preset.autoaugment and preset.flip and not preset.rand_augment_ops
    augment = aa.autoaugmenter()
    outs = [augment(tf.constant(ramp), tf.constant([0, s], tf.int64)).numpy() for s in range(12)]
    again = augment(tf.constant(ramp), tf.constant([0, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(outs[3], again)  # same seed, same result
    assert all(o.shape == ramp.shape and o.min() >= 0 and o.max() <= 255 for o in outs)
    assert sum(not np.allclose(o, ramp) for o in outs) >= 6  # most draws change the image


# The preset in the training pipeline (after the crop and cache): tests/test_pipelines_dataset.py,
# test_each_preset_changes_training_images_and_keeps_labels_valid[autoaugment].
