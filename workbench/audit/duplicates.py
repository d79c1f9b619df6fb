"""Exact and near duplicates, reported as groups.

Two images are linked when any of these holds:
* their bytes are equal (exact duplicates);
* their perceptual hashes (`imagehash.phash`, 64 bits) differ in at most `max_hamming` bits, the image or
  its mirror image (so a horizontally flipped copy is found by the hash too);
* the cosine similarity of their centred pooled backbone features is at least `min_cosine`;
* they are each other's most similar 8x8 colour thumbnail (`mutual_thumbnail_pairs`: the image, its mirror and
  its central crop compared), at least `min_thumb` (0.93), and a second cue agrees (features cosine >= 0.3 or hashes
  within 16 bits). This finds re-encoded, resized, cropped and mirrored copies of small images, which the
  backbone sees through upscaled JPEG blocks and the 64-bit hash sees shifted.

Links are closed transitively with union-find, so a photo and its three re-encodings are one group, not six
pairs. Memory is linear in N: Hamming distances, thumbnail and feature cosine similarities are computed a block
of `chunk` rows at a time against all N (a (chunk, N) matrix at most, 1024 x 50,000 float32 = 200 MB),
keeping only the pairs over the threshold. No approximate index is needed at these sizes: at 50,000 images
the pairwise stages took under 7 minutes and 1.3 GB on two busy cores (benchmarks/bench_audit.py --scale).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

# Chosen on the planted duplicates of benchmarks/bench_audit.py (CIFAR-10 subset, lite0 at 224 px): group recall
# 0.92, precision 0.82 against planted copies only (about half of the other groups are CIFAR's own duplicates).
# On Fashion-MNIST (28 px gray, centred objects) thumbnails and features of copies are no closer than those of
# unrelated images, and recall falls to 0.55 (README).
DEFAULT_MAX_HAMMING = 4
DEFAULT_MIN_COSINE = 0.92
DEFAULT_MIN_THUMB = 0.93
# A thumbnail link needs a second, weaker cue: features or hashes that agree somewhat.
CONFIRM_COSINE = 0.30
CONFIRM_HAMMING = 16
DEFAULT_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class ImageHashes:
    """Per image: the SHA-256 of its bytes, and the 64-bit perceptual hash of it and of its mirror image."""

    sha256: list[str]
    phash: np.ndarray  # (N,) uint64
    phash_mirror: np.ndarray  # (N,) uint64


def phash_bits(image) -> int:
    """The 64-bit perceptual hash of a PIL image as an integer."""
    import imagehash

    bits = imagehash.phash(image).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def groups_from_pairs(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The connected components of more than one member, each sorted, ordered by their first member."""
    uf = UnionFind(n)
    for a, b in pairs:
        uf.union(int(a), int(b))
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i in range(n):
        members[uf.find(i)].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def hamming_pairs(
    hashes: np.ndarray, max_distance: int, *, other: np.ndarray | None = None, chunk: int = DEFAULT_CHUNK
) -> list[tuple[int, int, int]]:
    """`(i, j, distance)` for i < j whose 64-bit hashes differ in at most `max_distance` bits.

    With `other`, compares `hashes[i]` with `other[j]` (e.g. each image with every mirror image), i != j.
    Computed `chunk` rows at a time: memory is chunk x N, never N x N.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    against = hashes if other is None else np.asarray(other, dtype=np.uint64)
    n = len(hashes)
    found = []
    chunk = max(1, chunk // 4)  # uint64 blocks: a quarter of the rows keeps them the size of the float32 ones
    for start in range(0, n, chunk):
        block = hashes[start : start + chunk, None] ^ against[None, :]
        distance = np.bitwise_count(block)
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = rows < cols if other is None else rows != cols
        found.extend(
            (int(min(a, b)), int(max(a, b)), int(d))
            for a, b, d in zip(rows[keep], cols[keep], distance[rows[keep] - start, cols[keep]], strict=True)
        )
    return found


def thumbnail_similarity(block: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """(len(block), N) best cosine between any view of a block row and any view of every image (views of
    `scan.Scan.thumbs`: whole, mirror, central crop, its mirror; each crop compared with whole images)."""
    whole, mirror, crop, crop_mirror = (thumbs[:, k] for k in range(4))
    b_whole, b_crop, b_crop_mirror = block[:, 0], block[:, 2], block[:, 3]
    best = b_whole @ whole.T
    # In place: two (len(block), N) matrices alive at a time, not six.
    for a, b in ((b_whole, mirror), (b_whole, crop), (b_crop, whole), (b_whole, crop_mirror), (b_crop_mirror, whole)):
        np.maximum(best, a @ b.T, out=best)
    return best


def mutual_thumbnail_pairs(
    thumbs: np.ndarray, min_similarity: float, *, chunk: int = DEFAULT_CHUNK
) -> list[tuple[int, int, float]]:
    """`(i, j, similarity)` for images that are each other's most similar thumbnail, at least `min_similarity`.

    Small thumbnails of unrelated images are often alike (two blue skies); a copy is the ONE image its original
    is closest to, and the other way round. Chunked: chunk x N at a time."""
    n = len(thumbs)
    best = np.full(n, -1, dtype=np.int64)
    value = np.full(n, -np.inf, dtype=np.float32)
    for start in range(0, n, chunk):
        sims = thumbnail_similarity(thumbs[start : start + chunk], thumbs)
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf
        best[start : start + chunk] = sims.argmax(axis=1)
        value[start : start + chunk] = sims[rows, best[start : start + chunk]]
    return [
        (i, int(best[i]), float(value[i]))
        for i in range(n)
        if best[i] > i and best[best[i]] == i and value[i] >= min_similarity
    ]


def centred_unit(x: np.ndarray) -> np.ndarray:
    """Features minus their mean, scaled to unit length.

    Pooled ReLU features are all non-negative, so raw cosines of unrelated images are high (0.5-0.8 on
    lite0); centring spreads them around 0 and leaves near-copies near 1."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_pairs(unit: np.ndarray, min_cosine: float, *, chunk: int = DEFAULT_CHUNK) -> list[tuple[int, int, float]]:
    """`(i, j, cosine)` for i < j with cosine of the unit rows at least `min_cosine`, chunk x N at a time."""
    n = len(unit)
    found = []
    for start in range(0, n, chunk):
        sims = unit[start : start + chunk] @ unit.T
        rows, cols = np.nonzero(sims >= min_cosine)
        keep = rows + start < cols
        found.extend((int(r + start), int(c), float(sims[r, c])) for r, c in zip(rows[keep], cols[keep], strict=True))
    return found


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    members: list[int]  # row indices, sorted
    kind: str  # "exact" (equal bytes) or "near"
    max_hamming: int | None  # the largest hash distance of the links found by the hash, None when none
    min_cosine: float | None  # the smallest cosine of the links found by the features, None when none
    # Which cues linked the members: "bytes", "hash", "features", "thumbnail". A group linked by thumbnails alone
    # is the weakest evidence (see the README's figures): review it before dropping anything.
    evidence: tuple[str, ...] = ()


def find_duplicates(
    hashes: ImageHashes,
    unit_features: np.ndarray | None,
    thumbs: np.ndarray | None = None,
    *,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_cosine: float = DEFAULT_MIN_COSINE,
    min_thumb: float = DEFAULT_MIN_THUMB,
    chunk: int = DEFAULT_CHUNK,
) -> list[DuplicateGroup]:
    """Groups of exact and near duplicates (see the module); `unit_features` / `thumbs` None: not used."""
    n = len(hashes.sha256)
    by_bytes: dict[str, list[int]] = collections.defaultdict(list)
    for i, digest in enumerate(hashes.sha256):
        by_bytes[digest].append(i)
    exact = [(m[0], m[k]) for m in by_bytes.values() for k in range(1, len(m))]
    hamming = hamming_pairs(hashes.phash, max_hamming, chunk=chunk)
    hamming += hamming_pairs(hashes.phash, max_hamming, other=hashes.phash_mirror, chunk=chunk)
    cosine = cosine_pairs(unit_features, min_cosine, chunk=chunk) if unit_features is not None else []
    thumb = []
    if thumbs is not None:
        for a, b, _ in mutual_thumbnail_pairs(thumbs, min_thumb, chunk=chunk):
            confirmed = _hamming(hashes, a, b) <= CONFIRM_HAMMING or (
                unit_features is not None and float(unit_features[a] @ unit_features[b]) >= CONFIRM_COSINE
            )
            if confirmed:
                thumb.append((a, b))
    pairs: list[tuple[int, int]] = exact + [(a, b) for a, b, _ in hamming] + [(a, b) for a, b, _ in cosine] + thumb
    groups = groups_from_pairs(n, pairs)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    ham: dict[int, list[int]] = collections.defaultdict(list)
    cos: dict[int, list[float]] = collections.defaultdict(list)
    for a, _, d in hamming:
        ham[group_of[a]].append(d)
    for a, _, c in cosine:
        cos[group_of[a]].append(c)
    cues: dict[int, set[str]] = collections.defaultdict(set)
    for name, links in (("bytes", exact), ("hash", hamming), ("features", cosine), ("thumbnail", thumb)):
        for link in links:
            cues[group_of[link[0]]].add(name)
    order = ("bytes", "hash", "features", "thumbnail")
    return [
        DuplicateGroup(
            members=members,
            kind="exact" if len({hashes.sha256[i] for i in members}) == 1 else "near",
            max_hamming=max(ham[g]) if ham[g] else None,
            min_cosine=round(min(cos[g]), 4) if cos[g] else None,
            evidence=tuple(c for c in order if c in cues[g]),
        )
        for g, members in enumerate(groups)
    ]


def _hamming(hashes: ImageHashes, a: int, b: int) -> int:
    """Bits between a's hash and b's, or b's mirror image's, whichever is fewer."""
    return min(
        int(np.bitwise_count(hashes.phash[a] ^ hashes.phash[b])),
        int(np.bitwise_count(hashes.phash[a] ^ hashes.phash_mirror[b])),
    )


def spans_splits(splits: Sequence[str | None]) -> bool:
    """A group whose members sit in more than one split leaks between them."""
    return len(set(splits)) > 1
