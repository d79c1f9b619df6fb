"""Outliers: images far from every other image of the data (blank, off-domain, corrupt-looking ones).

Blank (flat) images are always reported, first; then noise-like ones (`noise_like`: neighbouring pixels
unrelated, as in static or a pattern finer than the image), which the features do not single out either. The score of an image is its mean cosine distance to its `k` nearest neighbours among the centred unit
features (any class: an image close to many images of another class is a label question, not an outlier),
computed `chunk` rows at a time so memory stays chunk x N. Images whose score exceeds the median by more
than `mads` median absolute deviations are reported, farthest first, with the nearest class centroid.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_K = 5
DEFAULT_MADS = 6.0
DEFAULT_CHUNK = 1024
# Neighbouring pixels of photographs are strongly correlated (their spectra fall off with frequency): at 32x32 the
# least correlated image of the CIFAR-10 subset and of Fashion-MNIST was at 0.35, planted uniform noise and
# stripes at 0.01 or below (benchmarks/bench_audit.py). Below this an image looks like static, not a picture.
NOISE_CORRELATION = 0.2


@dataclasses.dataclass(frozen=True)
class Outlier:
    index: int
    score: float  # mean cosine distance to the k nearest neighbours
    threshold: float
    nearest_class: int  # the class whose centroid is closest
    class_distance: float  # cosine distance to that centroid


def knn_distances(unit: np.ndarray, k: int = DEFAULT_K, *, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Each row's mean cosine distance to its k nearest other rows (unit rows; exact, chunked)."""
    n = len(unit)
    k = max(1, min(k, n - 1))
    out = np.zeros(n, dtype=np.float32)
    if n < 2:
        return out
    for start in range(0, n, chunk):
        sims = unit[start : start + chunk] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # not its own neighbour
        top = np.partition(sims, n - k, axis=1)[:, n - k :]
        out[start : start + chunk] = 1.0 - top.mean(axis=1)
    return out


def neighbour_correlation(pixels: np.ndarray) -> np.ndarray:
    """(N,) the weaker of the horizontal and vertical correlation between neighbouring pixels, in gray, of
    (N, H, W, C) images (`scan.Scan.pixels`); 0 for a flat image."""
    gray = pixels.astype(np.float32).mean(axis=3)

    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=(1, 2), keepdims=True)
        b = b - b.mean(axis=(1, 2), keepdims=True)
        norm = np.sqrt((a * a).sum(axis=(1, 2)) * (b * b).sum(axis=(1, 2)))
        return np.where(norm > 1e-6, (a * b).sum(axis=(1, 2)) / np.maximum(norm, 1e-6), 0.0)

    return np.minimum(corr(gray[:, :, 1:], gray[:, :, :-1]), corr(gray[:, 1:], gray[:, :-1]))


def noise_like(pixels: np.ndarray, blank: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: images whose neighbouring pixels are nearly unrelated (static, fine stripes), blank ones aside."""
    noisy = neighbour_correlation(pixels) < NOISE_CORRELATION
    return noisy if blank is None else noisy & ~np.asarray(blank, bool)


def robust_threshold(scores: np.ndarray, mads: float = DEFAULT_MADS) -> float:
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median))) or 1e-6
    return median + mads * 1.4826 * mad


def find_outliers(
    unit: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    k: int = DEFAULT_K,
    mads: float = DEFAULT_MADS,
    blank: np.ndarray | None = None,
    noisy: np.ndarray | None = None,
) -> tuple[list[Outlier], np.ndarray]:
    """The outliers, blank images first, noise-like ones next (`noise_like`), then farthest first; and every
    row's score.

    Blank images (one flat colour, `scan.Scan.blank`) are always reported: the features do not single them
    out (on benchmarks/bench_audit.py planted flat, noise and striped images were no farther from their
    neighbours than CIFAR's own blurry ones), and a flat image is never a useful example."""
    scores = knn_distances(unit, k)
    threshold = robust_threshold(scores, mads)
    is_blank = np.zeros(len(unit), bool) if blank is None else np.asarray(blank, bool)
    is_noisy = np.zeros(len(unit), bool) if noisy is None else np.asarray(noisy, bool)
    centroids = np.stack(
        [unit[labels == c].mean(axis=0) if np.any(labels == c) else np.zeros(unit.shape[1]) for c in range(num_classes)]
    )
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    flagged = np.nonzero((scores > threshold) | is_blank | is_noisy)[0]
    flagged = flagged[np.lexsort((-scores[flagged], ~is_noisy[flagged], ~is_blank[flagged]))]
    out = []
    for i in flagged:
        distances = 1.0 - centroids @ unit[i]
        c = int(distances.argmin())
        out.append(Outlier(int(i), float(scores[i]), threshold, c, float(distances[c])))
    return out, scores
