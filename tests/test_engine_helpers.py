"""Shared helpers of the engine tests (no tests here): tiny generated datasets and configs.

Images are 32x32 PNGs whose class decides the dominant colour, so even a tiny randomly
initialised backbone separates them and a few epochs show learning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]


def make_image_folder(root: Path, per_class: int = 12, size: int = 32, classes: int = 3,
                      counts: list[int] | None = None, seed: int = 0) -> Path:
    """`root/<class>/<i>.png` with a noisy dominant colour per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        n = counts[k] if counts else per_class
        for i in range(n):
            base = np.array(COLOURS[k % len(COLOURS)], dtype=np.float32)
            pixels = base + rng.normal(0, 12, size=(size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def tiny_config(data: Path, out: Path, **overrides) -> dict:
    """A config dict for a run that takes seconds: phi=-4, random init, 32 px."""
    config = {
        "data": str(data), "variant": "phi=-4", "weights": "none", "image_size": 32,
        "batch_size": 8, "epochs": 2, "fine_tune_epochs": 1, "out": str(out), "precision": "float32",
        "strategy": "default",
        "recipe": {"learning_rate": 1e-2, "fine_tune_learning_rate": 1e-3, "val_fraction": 0.25,
                   "test_fraction": 0.0, "early_stopping_patience": 0},
    }
    recipe = overrides.pop("recipe", {})
    config.update(overrides)
    config["recipe"].update(recipe)
    return config


def calibrated_weights(path: Path, variant: str = "phi=-4", image_size: int = 32, seed: int = 0) -> Path:
    """An `.h5` weights file for `variant` whose BatchNorm statistics match real activations.

    A randomly initialised EfficientNet with BatchNorm in inference mode (moving mean 0,
    variance 1) shrinks its activations to ~1e-6 by the last block, so a frozen random
    backbone gives a head nothing to learn from. One training-mode pass with momentum 0 sets
    every moving statistic to the batch's, as a pretrained backbone would have them.
    """
    import keras

    from workbench.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(variant, num_classes=3, weights=None, input_shape=(image_size, image_size, 3))
    rng = np.random.default_rng(seed)
    images = np.concatenate([
        np.clip(np.array(c, np.float32) + rng.normal(0, 12, (16, image_size, image_size, 3)), 0, 255)
        for c in COLOURS
    ]).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(images, training=True)
    # The by-layer-name h5 layout of keras.applications files: loads into any class count
    # (workbench.models skips the head when its size differs).
    import h5py

    with h5py.File(path, "w") as f:
        weighted = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in weighted]
        for layer in weighted:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{i}" for i in range(len(layer.weights))]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, weight in zip(names, layer.weights):
                group[name] = np.asarray(weight.numpy())
    return path
