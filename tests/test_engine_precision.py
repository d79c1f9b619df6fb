"""Precision policies: resolution, restoration, loss scaling, and a short bfloat16 training."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from test_engine_helpers import make_image_folder, tiny_config

from workbench.engine.precision import precision_policy, resolve_precision, wrap_optimizer


def test_auto_is_float32_on_cpu():
    import tensorflow as tf

    assert not tf.config.list_physical_devices("GPU")
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="fp8"):
        resolve_precision("fp8")


def test_policy_is_restored_after_the_block_even_on_error():
    keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(RuntimeError), precision_policy("mixed_float16") as policy:
        assert policy == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        raise RuntimeError("fail inside")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_float16_gets_loss_scaling_and_bfloat16_does_not():
    scaled = wrap_optimizer(keras.optimizers.AdamW(1e-3), "mixed_float16")
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(
        wrap_optimizer(keras.optimizers.AdamW(1e-3), "mixed_bfloat16"), keras.optimizers.LossScaleOptimizer
    )


def test_short_bfloat16_training_learns_with_float32_outputs(tmp_path):
    """End to end through the backbone (no feature cache), so every step computes in bfloat16."""
    from workbench.engine import fine_tune
    from workbench.engine.events import read_events

    data = make_image_folder(tmp_path / "data")
    config = tiny_config(
        data,
        tmp_path / "runs",
        variant="lite0",
        weights="imagenet",
        image_size=48,
        epochs=3,
        fine_tune_epochs=0,
        precision="mixed_bfloat16",
        recipe={"cache_features": "off", "learning_rate": 1e-2, "warmup_fraction": 0.0},
    )
    result = fine_tune(config)
    assert result.precision == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run

    losses = [e["loss"] for e in read_events(result.run_dir) if e["type"] == "epoch"]
    assert len(losses) == 3 and all(loss is not None and math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]

    model = keras.saving.load_model(result.model_path, safe_mode=True)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    images = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    probabilities = model(images, training=False)
    assert probabilities.dtype == "float32"
    assert np.all(np.isfinite(probabilities)) and np.allclose(np.sum(probabilities, axis=1), 1.0, atol=1e-5)
