"""Test-time augmentation (issue 12): average a model's probabilities over a few views of each image.

* `flip`: the image and its horizontal mirror (2 views). Safe for photos of objects; not for text or
  anything whose meaning changes when mirrored.
* `crops`: five crops (four corners and the centre, each `CROP_FRACTION` of the side, resized back to the
  model's resolution) and their mirrors (10 views, the "ten-crop" of Krizhevsky et al. 2012).

Views are made from the evaluation pixels (centre square, resized to the model's resolution), so every
view has the model's input size. TTA costs one forward pass per view; `evaluate(..., tta=...)` reports
its accuracy gain against that cost.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TTA_MODES = ("flip", "crops")
CROP_FRACTION = 0.875  # 7/8 of the side: the share of the image the usual 224-of-256 crop keeps


def flip(images: np.ndarray) -> np.ndarray:
    """Mirror a batch (B, H, W, C) left to right."""
    return images[:, :, ::-1, :]


def five_crops(images: np.ndarray, fraction: float = CROP_FRACTION) -> list[np.ndarray]:
    """Top-left, top-right, bottom-left, bottom-right and centre crops of `fraction` of the side,
    each resized (bilinear) back to the batch's size."""
    import tensorflow as tf

    _, height, width, _ = images.shape
    h, w = max(round(height * fraction), 1), max(round(width * fraction), 1)
    top, left = (height - h) // 2, (width - w) // 2
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]
    return [
        tf.image.resize(images[:, y : y + h, x : x + w, :], (height, width), method="bilinear").numpy()
        for y, x in corners
    ]


def views(images: np.ndarray, mode: str) -> list[np.ndarray]:
    """The batches a TTA `mode` averages over, the original first (flip) or the five crops then their mirrors."""
    check_mode(mode)
    images = np.asarray(images, np.float32)
    if mode == "flip":
        return [images, flip(images)]
    crops = five_crops(images)
    return crops + [flip(c) for c in crops]


def tta_predict(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mode: str) -> np.ndarray:
    """The mean of `predict` (float32 images → probabilities (B, C)) over the views of `mode`."""
    return np.mean([np.asarray(predict(v), np.float64) for v in views(images, mode)], axis=0).astype(np.float32)


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ValueError(f"--tta {mode!r} is not a TTA mode; use one of {', '.join(TTA_MODES)} (plain --tta is flip)")
    return mode
