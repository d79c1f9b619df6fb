"""Dataset statistics: image sizes and aspect ratios, images the model will upscale a lot, colour, balance."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from pipelines.manifest import SPLITS, Record

# An image whose short side is this many times smaller than the model's input is blown up into blur.
UPSCALE_WARNING = 4.0


def dataset_stats(
    records: list[Record], classes: list[str], image_size: int, grayscale: np.ndarray, blank: np.ndarray
) -> dict[str, Any]:
    """JSON-ready statistics of the usable `records` (rows of the audit) for a model input of `image_size` px."""
    widths = np.array([r.width for r in records], dtype=float)
    heights = np.array([r.height for r in records], dtype=float)
    aspect = widths / np.maximum(heights, 1)
    short = np.minimum(widths, heights)
    upscale = image_size / np.maximum(short, 1)
    counts = collections.Counter(r.label for r in records)
    per_class = {c: counts.get(c, 0) for c in classes}
    largest, smallest = max(per_class.values()), min(per_class.values())
    per_split = {s: collections.Counter(r.label for r in records if r.split == s) for s in SPLITS}
    return {
        "images": len(records),
        "width": _summary(widths),
        "height": _summary(heights),
        "aspect_ratio": _summary(aspect)
        | {"portrait": int((aspect < 0.9).sum()), "landscape": int((aspect > 1.1).sum())},
        "image_size": image_size,
        "upscale_warning": UPSCALE_WARNING,
        "upscaled_a_lot": int((upscale >= UPSCALE_WARNING).sum()),
        "median_upscale": round(float(np.median(upscale)), 2) if len(records) else 0.0,
        "grayscale": int(grayscale.sum()),
        "grayscale_share": round(float(grayscale.mean()), 4) if len(records) else 0.0,
        "blank": int(blank.sum()),
        "class_counts": per_class,
        "split_class_counts": {s: {c: per_split[s].get(c, 0) for c in classes} for s in SPLITS},
        "imbalance_ratio": round(largest / smallest, 2) if smallest else None,
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"min": 0, "median": 0, "max": 0}
    return {
        "min": round(float(values.min()), 3),
        "median": round(float(np.median(values)), 3),
        "max": round(float(values.max()), 3),
    }
