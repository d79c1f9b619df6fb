"""Outliers: images far from every other image of the data (blank, off-domain, corrupt-looking ones).

Blank (flat) images are always reported, first. The score of an image is its mean cosine distance to its `k` nearest neighbours among the centred unit
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
) -> tuple[list[Outlier], np.ndarray]:
    """The outliers, blank images first, then farthest first; and every row's score.

    Blank images (one flat colour, `scan.Scan.blank`) are always reported: the features do not single them
    out (on benchmarks/bench_audit.py planted flat, noise and striped images were no farther from their
    neighbours than CIFAR's own blurry ones), and a flat image is never a useful example."""
    scores = knn_distances(unit, k)
    threshold = robust_threshold(scores, mads)
    is_blank = np.zeros(len(unit), bool) if blank is None else np.asarray(blank, bool)
    centroids = np.stack(
        [unit[labels == c].mean(axis=0) if np.any(labels == c) else np.zeros(unit.shape[1]) for c in range(num_classes)]
    )
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    flagged = np.nonzero((scores > threshold) | is_blank)[0]
    flagged = flagged[np.lexsort((-scores[flagged], ~is_blank[flagged]))]
    out = []
    for i in flagged:
        distances = 1.0 - centroids @ unit[i]
        c = int(distances.argmin())
        out.append(Outlier(int(i), float(scores[i]), threshold, c, float(distances[c])))
    return out, scores
