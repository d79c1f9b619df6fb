"""Pixel verification of candidate duplicate pairs: the best alignment of one image onto the other.

A near-duplicate is the same picture after re-encoding, resizing, a crop of a few percent and perhaps a mirror.
The cheap cues of `duplicates` (hashes, 8x8 thumbnails, backbone features) only propose candidates: on their
own they also join look-alikes (two white cars on grey, two plain grey shirts, two birds in a blue sky). This
module decides, from the pixels:

* every crop of image a that cuts at most `MAX_CROP` of each side's length (in steps of `STEP`, shared between the
  two ends) is resampled to SIDE x SIDE with area weights, and compared with the whole of b and of b's mirror;
  then the same with the roles swapped (either may be the cropped one);
* two measures, each of its best alignment: the correlation (zero-mean, unit-length pixel vectors: blind to
  brightness and contrast, so it finds copies whatever their encoding) and the root-mean-square difference of
  the lightly blurred pixel values (0-255: a copy keeps its brightness, a look-alike rarely has the same).

Both work on a SOURCE x SOURCE box-filtered copy of every image (`scan.Scan.pixels`, 3 KB an image), with the
pairs grouped by image, so an image's crops are resampled once for all its candidates: two matrix products an
image (`crop_matrices` is the area resampling of one axis, a crop at a time).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

SOURCE = 32  # side of the stored copy of every image
SIDE = 24  # side the crops are compared at
MAX_CROP = 0.125  # at most this share of a side cut off, in all, by a crop
STEP = 0.025


@dataclasses.dataclass(frozen=True)
class PairScores:
    """For each candidate pair: the correlation and the blurred RMS difference of its best alignment."""

    pairs: np.ndarray  # (P, 2) int, i < j
    correlation: np.ndarray  # (P,) float32, at most 1
    rms: np.ndarray  # (P,) float32, 0-255


def area_matrix(source: int, side: int, start: float, end: float) -> np.ndarray:
    """(side, source) weights that resample the interval [start, end) of a `source`-long axis to `side` samples,
    each the mean of the source pixels it covers (area interpolation, so downsampling averages JPEG noise)."""
    edges = np.linspace(start, end, side + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def crop_matrices(source: int = SOURCE, side: int = SIDE, max_crop: float = MAX_CROP, step: float = STEP) -> np.ndarray:
    """(C, side, source): one axis's area resampling for every (cut at the start, cut at the end) on the grid."""
    cuts = np.arange(0, max_crop + 1e-9, step)
    return np.stack(
        [
            area_matrix(source, side, a * source, source - b * source)
            for a in cuts
            for b in cuts
            if a + b <= max_crop + 1e-9
        ]
    )


def blur_matrix(side: int = SIDE) -> np.ndarray:
    """(side, side): a 3-tap box blur of one axis, edges repeated. Applied to both axes of a resampled image it is
    a 3x3 box blur (half a pixel of misalignment no longer counts); folded into the resampling matrices it costs
    nothing more."""
    m = np.zeros((side, side), np.float32)
    for i in range(side):
        for j in (i - 1, i, i + 1):
            m[i, min(max(j, 0), side - 1)] += 1.0 / 3.0
    return m


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def crops(image: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """(C*C, SIDE, channels, SIDE): every crop of one (SOURCE, SOURCE, channels) image, resampled.

    Rows, channels, columns: the order two matrix products leave them in, so the last copy moves whole rows.
    Every image compared is laid out the same way (`_resample`), and a mirror image is a flip of the last axis."""
    c, side, source = mats.shape
    channels = image.shape[2]
    # Columns first: (h, channels, w) @ (w, c*side) -> (h, channels, c*side)
    cols = np.transpose(image, (0, 2, 1)) @ mats.transpose(2, 0, 1).reshape(source, c * side)
    # Then rows: (c*side, h) @ (h, channels*c*side), one matrix product for all C*C crops.
    rows = mats.reshape(c * side, source) @ cols.reshape(source, channels * c * side)
    out = rows.reshape(c, side, channels, c, side).transpose(0, 3, 1, 2, 4)
    return out.reshape(c * c, side, channels, side)


def verify_pairs(pixels: np.ndarray, pairs: Sequence[tuple[int, int]]) -> PairScores:
    """Correlation and blurred RMS of the best alignment of each pair (see the module), in both directions."""
    pairs_arr = np.array(sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b}), dtype=np.int64).reshape(-1, 2)
    correlation = np.full(len(pairs_arr), -1.0, dtype=np.float32)
    rms = np.full(len(pairs_arr), np.inf, dtype=np.float32)
    if not len(pairs_arr):
        return PairScores(pairs_arr, correlation, rms)
    source = pixels.shape[1]
    mats = crop_matrices(source)
    blurred_mats = blur_matrix() @ mats
    whole = area_matrix(source, SIDE, 0, source)
    # Every image whole at SIDE x SIDE, plain and blurred, once, stored as float16 (7 KB an image: 350 MB for
    # 50,000; pixel values need no more precision) and made a chunk at a time; crops one anchor at a time.
    wholes = np.empty((len(pixels), SIDE, pixels.shape[3], SIDE), np.float16)
    blurred_wholes = np.empty_like(wholes)
    for start in range(0, len(pixels), 4096):
        block = pixels[start : start + 4096].astype(np.float32)
        wholes[start : start + 4096] = _resample(block, whole)
        blurred_wholes[start : start + 4096] = _resample(block, blur_matrix() @ whole)
    neighbours: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for p, (a, b) in enumerate(pairs_arr):
        neighbours[int(a)].append((int(b), p))
        neighbours[int(b)].append((int(a), p))
    for anchor, found in neighbours.items():
        others = np.array([o for o, _ in found])
        rows = np.array([p for _, p in found])
        image = pixels[anchor].astype(np.float32)
        targets = wholes[others].astype(np.float32)
        targets = np.concatenate([targets, targets[..., ::-1]])  # and each one's mirror
        best_corr = (unit_rows(crops(image, mats)) @ unit_rows(targets).T).max(axis=0)
        v = crops(image, blurred_mats).reshape(len(mats) ** 2, -1)
        t = blurred_wholes[others].astype(np.float32)
        t = np.concatenate([t, t[..., ::-1]]).reshape(2 * len(others), -1)
        squared = (v * v).sum(axis=1)[:, None] + (t * t).sum(axis=1)[None, :] - 2.0 * (v @ t.T)
        best_rms = np.sqrt(np.maximum(squared.min(axis=0), 0.0) / v.shape[1])
        k = len(others)
        np.maximum.at(correlation, rows, np.maximum(best_corr[:k], best_corr[k:]))
        np.minimum.at(rms, rows, np.minimum(best_rms[:k], best_rms[k:]))
    return PairScores(pairs_arr, correlation, rms)


def _resample(images: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(N, side, channels, side), rows, channels, columns as `crops` lays them out: `m` (side, source) applied to
    both axes of (N, source, source, channels) images."""
    out = np.tensordot(np.tensordot(images, m, axes=([2], [1])), m, axes=([1], [1]))  # (N, channels, cols, rows)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
