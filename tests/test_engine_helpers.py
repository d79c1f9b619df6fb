"""Shared helpers of the engine tests (no tests here): tiny generated datasets and configs.

Images are 32x32 PNGs whose class decides the dominant colour, so even a tiny randomly
initialised backbone separates them and a few epochs show learning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]


def colour_images(per_class: int, size: int = 32, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, size, size, 3) with a noisy dominant colour per class, and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(classes):
        base = np.array(COLOURS[k % len(COLOURS)], dtype=np.float32)
        for _ in range(per_class):
            images.append(np.clip(base + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.array(labels)


def make_image_folder(root: Path, per_class: int = 12, size: int = 32, classes: int = 3, seed: int = 0) -> Path:
    """`root/class<k>/<i>.png` made by `colour_images`."""
    from PIL import Image

    images, labels = colour_images(per_class, size, classes, seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def tiny_config(data: Path, out: Path, **overrides) -> dict:
    """A config dict for a run that takes seconds: phi=-4, random init, 32 px."""
    config = {
        "data": str(data),
        "variant": "phi=-4",
        "weights": "none",
        "image_size": 32,
        "batch_size": 8,
        "epochs": 2,
        "fine_tune_epochs": 1,
        "out": str(out),
        "precision": "float32",
        "strategy": "default",
        "recipe": {
            "learning_rate": 1e-2,
            "fine_tune_learning_rate": 1e-3,
            "val_fraction": 0.25,
            "test_fraction": 0.0,
            "early_stopping_patience": 0,
        },
    }
    recipe = overrides.pop("recipe", {})
    config.update(overrides)
    config["recipe"].update(recipe)
    return config
