"""One harness that every registered variant runs through, at a small input size.

Full-resolution runs of the large variants are opt-in: `pytest -m slow`.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from workbench.models import build_model, custom_variant, get_variant, published_names, registered_families

# Every registered family's named variants, plus two custom φ of each family with a scaling rule.
VARIANTS = [
    *published_names(),
    *(
        custom_variant(phi, family.scaling, base=family).name
        for family in registered_families()
        if family.scaling is not None
        for phi in (-2, 0.5)
    ),
]
# The larger variants are the same blocks as the smaller ones of their family, only more and wider: b2-b7 cost
# about 100 s, lite2-lite4 about 15 s and b1v2-b3v2, mv2, lv2 about 70 s on 2 cores, so they run with
# `pytest -m slow` (the default suite keeps every block type, stem and normalisation through b0, b1, lite0, lite1,
# b0v2, sv2 and the custom phi).
HEAVY = {"b2", "b3", "b4", "b5", "b6", "b7", "lite2", "lite3", "lite4", "b1v2", "b2v2", "b3v2", "mv2", "lv2"}
HARNESS_VARIANTS = [pytest.param(v, marks=pytest.mark.slow) if v in HEAVY else v for v in VARIANTS]
SMALL = (32, 32, 3)  # total stride is 32: the smallest size every variant accepts
NUM_CLASSES = 3


def _images(n=2, shape=SMALL, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


@pytest.mark.parametrize("variant", HARNESS_VARIANTS)
def test_variant_forward_gradients_and_save_load(variant, tmp_path):
    model = build_model(variant, NUM_CLASSES, input_shape=SMALL)
    x = _images()

    probabilities = model(x, training=False).numpy()
    assert probabilities.shape == (2, NUM_CLASSES)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    # 8 images: stochastic depth drops a residual branch per image, and must not drop it for all
    batch = _images(8, seed=1)
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(
            np.eye(NUM_CLASSES)[np.arange(8) % NUM_CLASSES], model(batch, training=True)
        )
    grads = tape.gradient(loss, model.trainable_weights)
    unconnected = [w.path for w, g in zip(model.trainable_weights, grads, strict=True) if g is None]
    assert not unconnected, f"weights without a gradient: {unconnected}"
    # Kernels must really move. (A BN beta followed by a linear 1×1 conv and another
    # training-mode BN gets an exactly-zero gradient: the next BN removes the shift.)
    still = [
        w.path
        for w, g in zip(model.trainable_weights, grads, strict=True)
        if w.path.endswith("kernel") and not np.any(g.numpy())
    ]
    assert not still, f"kernels with an all-zero gradient: {still}"
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)

    probabilities = model(x, training=False).numpy()  # the training step moved the BN statistics
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # built-in layers only: no custom objects
    assert json.loads(loaded.to_json()) == json.loads(model.to_json())  # config round trip
    np.testing.assert_allclose(loaded(x, training=False).numpy(), probabilities, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", HARNESS_VARIANTS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_variant_output_is_float32_under_mixed_precision(variant, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(variant, NUM_CLASSES, input_shape=SMALL)
    assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
    out = model(_images(), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.all(np.isfinite(out.numpy()))


@pytest.mark.slow
@pytest.mark.parametrize("variant", published_names())
def test_variant_at_full_resolution(variant):
    spec = get_variant(variant)
    model = build_model(variant, 1000)
    out = model.predict(_images(1, (spec.resolution, spec.resolution, 3)), verbose=0)
    assert out.shape == (1, 1000) and np.all(np.isfinite(out))
