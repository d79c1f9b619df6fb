"""One read of every image for what the audit needs from pixels: byte digest, perceptual hashes, colour,
thumbnails and a small copy for the duplicates' pixel check.

Each file is opened once (threads: Pillow releases the GIL while decoding). The path read is the one
tf.data decodes (`Record.source_path`, a normalised RGB copy for odd formats), so the hashes describe the
pixels training sees.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from workbench.audit.align import SOURCE
from workbench.audit.duplicates import ImageHashes, file_sha256, phash_bits

# Per-channel difference below which an RGB image counts as grayscale (JPEG noise keeps R, G, B a few levels apart).
GRAY_TOLERANCE = 3.0
# Pixel standard deviation below which an image is blank (one flat colour).
BLANK_STD = 2.0
# Side of the colour thumbnail compared between images: small enough that re-encoding, resizing and a crop of a
# few percent barely move it (box-filtered, so JPEG blocks average out).
THUMB_SIDE = 8
CROP_VIEW = 0.92


@dataclasses.dataclass(frozen=True)
class Scan:
    hashes: ImageHashes
    # (N, 4, 3 * THUMB_SIDE**2) float32: zero-mean unit colour thumbnails of the image, its mirror, its central
    # CROP_VIEW and that crop's mirror (a cropped copy matches the original's central crop better than its whole).
    thumbs: np.ndarray
    # (N, align.SOURCE, align.SOURCE, 3) uint8: every image box-filtered to a small square, for the pixel check of
    # candidate duplicates (3 KB an image: 150 MB for 50,000).
    pixels: np.ndarray
    grayscale: np.ndarray  # (N,) bool
    blank: np.ndarray  # (N,) bool


def thumbnail(image) -> np.ndarray:
    """An image's THUMB_SIDE x THUMB_SIDE colour thumbnail as a zero-mean unit vector (cosine = correlation)."""
    from PIL import Image

    v = np.asarray(image.resize((THUMB_SIDE, THUMB_SIDE), Image.BOX), dtype=np.float32).reshape(-1)
    v = v - v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


def _one(path: str) -> tuple:
    from PIL import Image, ImageOps

    digest = file_sha256(path)
    with Image.open(path) as im:
        im.draft("RGB", (256, 256))  # JPEG: decode at a reduced scale, plenty for a 32x32 hash
        rgb = im.convert("RGB")
    small = np.asarray(rgb.resize((64, 64)), dtype=np.float32)
    gray = bool(np.abs(small - small.mean(axis=2, keepdims=True)).max() <= GRAY_TOLERANCE)
    blank = bool(small.reshape(-1, 3).std(axis=0).max() < BLANK_STD)  # flat in every channel: one colour
    mirror = ImageOps.mirror(rgb)
    w, h = rgb.size
    margin = (1 - CROP_VIEW) / 2
    crop = rgb.crop((round(w * margin), round(h * margin), round(w * (1 - margin)), round(h * (1 - margin))))
    views = np.stack([thumbnail(v) for v in (rgb, mirror, crop, ImageOps.mirror(crop))])
    pixels = np.asarray(rgb.resize((SOURCE, SOURCE), Image.BOX), dtype=np.uint8)
    return digest, phash_bits(rgb), phash_bits(mirror), gray, blank, views, pixels


def scan_images(paths: Sequence[str], workers: int = 0) -> Scan:
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(_one, paths))
    return Scan(
        hashes=ImageHashes(
            sha256=[r[0] for r in rows],
            phash=np.array([r[1] for r in rows], dtype=np.uint64),
            phash_mirror=np.array([r[2] for r in rows], dtype=np.uint64),
        ),
        thumbs=np.array([r[5] for r in rows], dtype=np.float32).reshape(len(rows), 4, -1),
        pixels=np.array([r[6] for r in rows], dtype=np.uint8).reshape(len(rows), SOURCE, SOURCE, 3),
        grayscale=np.array([r[3] for r in rows], dtype=bool),
        blank=np.array([r[4] for r in rows], dtype=bool),
    )
