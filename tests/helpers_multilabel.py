"""Tiny multi-label data for the tests: small PNGs whose labels are colour stripes, and their label file.

Label k of `LABELS` paints the k-th vertical third of the image in its colour; an image without it keeps a grey
third there. So any subset of labels is possible (the empty set too), and a tiny model can learn each label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = ("blue", "green", "red")
_COLOURS = {"blue": (30, 40, 220), "green": (40, 200, 50), "red": (220, 40, 30)}


def stripe_image(labels, size: int = 24, rng=None) -> np.ndarray:
    rng = rng or np.random.default_rng(0)
    pixels = np.full((size, size, 3), 128.0) + rng.uniform(-20, 20, (size, size, 3))
    third = size // 3
    for k, name in enumerate(LABELS):
        if name in labels:
            pixels[:, k * third : (k + 1) * third] = np.array(_COLOURS[name]) + rng.uniform(-25, 25, (size, third, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def label_sets(n: int, seed: int = 0) -> list[tuple[str, ...]]:
    """`n` label sets, each label present with probability one half (some sets are empty)."""
    rng = np.random.default_rng(seed)
    return [tuple(name for name in LABELS if rng.random() < 0.5) for _ in range(n)]


def make_multilabel_data(root: Path, n: int = 40, seed: int = 0, fmt: str = "csv", size: int = 24) -> Path:
    """`root/images/img_XXX.png` and `root/labels.csv` (or `.jsonl`); returns the label file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, labels in enumerate(label_sets(n, seed)):
        name = f"images/img_{i:03d}.png"
        Image.fromarray(stripe_image(labels, size, rng)).save(root / name)
        rows.append((name, labels))
    if fmt == "jsonl":
        path = root / "labels.jsonl"
        path.write_text("".join(json.dumps({"image": n, "labels": list(ls)}) + "\n" for n, ls in rows))
    else:
        path = root / "labels.csv"
        path.write_text("image,labels\n" + "".join(f"{n},{';'.join(ls)}\n" for n, ls in rows))
    return path
