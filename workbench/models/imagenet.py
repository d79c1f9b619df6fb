"""ImageNet-1k class names, for decoding the 1000-way predictions of pretrained models.

`imagenet_classes.json` lists the 1000 names in class-index order. It comes from
tensorflow-datasets (`tensorflow_datasets/datasets/siscore/labels.py`, Apache-2.0), so
decoding works offline, unlike `keras.applications.imagenet_utils.decode_predictions`,
which downloads its index file.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    text = resources.files("workbench.models").joinpath("imagenet_classes.json").read_text(encoding="utf-8")
    return tuple(json.loads(text))


def decode_predictions(probabilities, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """[(class index, class name, probability), ...] per row, best first."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != 1000:
        raise ValueError(f"expected ImageNet predictions of shape (batch, 1000), got {probabilities.shape}")
    names = imagenet_class_names()
    order = np.argsort(-probabilities, axis=1)[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in idx] for row, idx in zip(probabilities, order, strict=True)]
