"""Exact and near duplicates, reported as groups.

Cheap cues propose candidate pairs; the pixels decide (`align.verify_pairs`):
* equal bytes are exact duplicates, linked without more ado;
* proposed: perceptual hashes (`imagehash.phash`, 64 bits; the image or its mirror) within `max_hamming` bits,
  and each image's `k` most similar images by centred pooled backbone features and by 8x8 colour thumbnails
  (whole, mirrored, centrally cropped: `thumbnail_similarity`);
* linked when the best crop/mirror alignment of the two is a copy: correlation at least `min_correlation`, RMS
  difference of the blurred pixels at most `max_rms`, and, unless the match is near-exact (`SURE_CORRELATION`,
  `SURE_RMS`), at least `margin` closer than the third-closest candidate of either image. That last guard is
  for data of look-alikes (plain garments on black, blue skies): there unrelated images crowd within a few
  levels of each other, and a copy has to stand out from the crowd to count.

Links are closed transitively with union-find, so a photo and its three re-encodings are one group, not six
pairs. Memory is linear in N: hash distances, thumbnail and feature similarities are computed a block of `chunk`
rows at a time against all N (a (chunk, N) matrix at most, 1024 x 50,000 float32 = 200 MB), keeping only each
row's k best; the pixel check works on the candidates alone. No approximate index is needed at these sizes
(benchmarks/bench_audit.py --scale).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

# Chosen on the planted duplicates of benchmarks/bench_audit.py (see the README's table). With k=10, 100 of 100
# planted copies on the CIFAR-10 subset and 99 of 100 on Fashion-MNIST were proposed; their aligned correlation was
# at least 0.94 / 0.90, their blurred RMS at most 8.8 / 16.7 (95% under 7.9 / 12.3: 28-px garments lose more to
# a JPEG re-encoding than photos do), while unrelated look-alikes came as close as 0.99 correlation and 6 RMS.
DEFAULT_MAX_HAMMING = 4
DEFAULT_K = 10
DEFAULT_MIN_CORRELATION = 0.90
DEFAULT_MAX_RMS = 12.0
DEFAULT_MARGIN = 3.0
# A near-exact match is linked even among look-alikes: so a photo uploaded five times is one group (each copy's
# third-closest candidate is another copy), and no unrelated pair came this close on either benchmark set.
SURE_CORRELATION = 0.97
SURE_RMS = 5.0
LOOKALIKE_RANK = 3
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


def top_k_pairs(similarity, n: int, k: int, *, chunk: int = DEFAULT_CHUNK) -> set[tuple[int, int]]:
    """`(i, j)`, i < j, for each row's `k` most similar other rows; `similarity(start, stop)` is the
    (stop - start, n) block of similarities. Chunked: chunk x N at a time."""
    k = min(k, n - 1)
    found: set[tuple[int, int]] = set()
    if k < 1:
        return found
    for start in range(0, n, chunk):
        sims = similarity(start, min(n, start + chunk))
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # not its own neighbour
        best = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for r, cols in enumerate(best):
            i = r + start
            found.update((min(i, int(j)), max(i, int(j))) for j in cols)
    return found


def centred_unit(x: np.ndarray) -> np.ndarray:
    """Features minus their mean, scaled to unit length.

    Pooled ReLU features are all non-negative, so raw cosines of unrelated images are high (0.5-0.8 on
    lite0); centring spreads them around 0 and leaves near-copies near 1."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    members: list[int]  # row indices, sorted
    kind: str  # "exact" (equal bytes) or "near"
    max_hamming: int  # the largest hash distance between two linked members (mirror counted)
    min_cosine: float | None  # the smallest feature cosine between two linked members, None without features
    min_correlation: float | None  # the weakest pixel correlation of a near link, None when all are exact
    max_rms: float | None  # the largest blurred RMS difference (0-255) of a near link
    # What proposed the links: "bytes", "hash", "features", "thumbnail"; near links are all checked by "pixels".
    evidence: tuple[str, ...] = ()


def candidate_pairs(
    hashes: ImageHashes,
    unit_features: np.ndarray | None,
    thumbs: np.ndarray | None,
    *,
    k: int = DEFAULT_K,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    chunk: int = DEFAULT_CHUNK,
) -> dict[tuple[int, int], set[str]]:
    """The candidate pairs, each with the cues that proposed it (see the module)."""
    n = len(hashes.sha256)
    proposed: dict[tuple[int, int], set[str]] = collections.defaultdict(set)
    for found in (
        hamming_pairs(hashes.phash, max_hamming, chunk=chunk),
        hamming_pairs(hashes.phash, max_hamming, other=hashes.phash_mirror, chunk=chunk),
    ):
        for a, b, _ in found:
            proposed[(a, b)].add("hash")
    if unit_features is not None:
        for pair in top_k_pairs(lambda i, j: unit_features[i:j] @ unit_features.T, n, k, chunk=chunk):
            proposed[pair].add("features")
    if thumbs is not None:
        for pair in top_k_pairs(lambda i, j: thumbnail_similarity(thumbs[i:j], thumbs), n, k, chunk=chunk):
            proposed[pair].add("thumbnail")
    return proposed


def find_duplicates(
    hashes: ImageHashes,
    pixels: np.ndarray,
    unit_features: np.ndarray | None = None,
    thumbs: np.ndarray | None = None,
    *,
    k: int = DEFAULT_K,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    max_rms: float = DEFAULT_MAX_RMS,
    margin: float = DEFAULT_MARGIN,
    chunk: int = DEFAULT_CHUNK,
) -> list[DuplicateGroup]:
    """Groups of exact and near duplicates (see the module). `pixels`: `scan.Scan.pixels`, row for row."""
    from workbench.audit.align import verify_pairs

    n = len(hashes.sha256)
    by_bytes: dict[str, list[int]] = collections.defaultdict(list)
    for i, digest in enumerate(hashes.sha256):
        by_bytes[digest].append(i)
    exact = {(m[0], m[j]) for m in by_bytes.values() for j in range(1, len(m))}
    proposed = candidate_pairs(hashes, unit_features, thumbs, k=k, max_hamming=max_hamming, chunk=chunk)
    checked = verify_pairs(pixels, [p for p in proposed if p not in exact])
    lookalike = _kth_smallest(n, checked.pairs, checked.rms, LOOKALIKE_RANK)
    links: dict[tuple[int, int], tuple[float, float] | None] = dict.fromkeys(exact)
    for (a, b), corr, rms in zip(checked.pairs.tolist(), checked.correlation, checked.rms, strict=True):
        sure = corr >= SURE_CORRELATION and rms <= SURE_RMS
        stands_out = rms < min(lookalike[a], lookalike[b]) - margin
        if corr >= min_correlation and rms <= max_rms and (sure or stands_out):
            links[(a, b)] = (float(corr), float(rms))
    groups = groups_from_pairs(n, links)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    links_of: list[dict[tuple[int, int], tuple[float, float] | None]] = [{} for _ in groups]
    for pair, value in links.items():
        links_of[group_of[pair[0]]][pair] = value
    out = []
    for members, mine in zip(groups, links_of, strict=True):
        near = [v for v in mine.values() if v is not None]
        cues = {"bytes"} if any(v is None for v in mine.values()) else set()
        for p, v in mine.items():
            if v is not None:
                cues |= proposed[p] | {"pixels"}
        out.append(
            DuplicateGroup(
                members=members,
                kind="exact" if len({hashes.sha256[i] for i in members}) == 1 else "near",
                max_hamming=max(_hamming(hashes, a, b) for a, b in mine),
                min_cosine=None
                if unit_features is None
                else round(min(float(unit_features[a] @ unit_features[b]) for a, b in mine), 4),
                min_correlation=round(min(c for c, _ in near), 4) if near else None,
                max_rms=round(max(r for _, r in near), 2) if near else None,
                evidence=tuple(c for c in ("bytes", "hash", "features", "thumbnail", "pixels") if c in cues),
            )
        )
    return out


def _kth_smallest(n: int, pairs: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k-th smallest value among the pairs it is in (inf when it is in fewer than k)."""
    per: list[list[float]] = [[] for _ in range(n)]
    for (a, b), v in zip(pairs.tolist(), values.tolist(), strict=True):
        per[a].append(v)
        per[b].append(v)
    return np.array([sorted(vs)[k - 1] if len(vs) >= k else np.inf for vs in per])


def _hamming(hashes: ImageHashes, a: int, b: int) -> int:
    """Bits between a's hash and b's, or b's mirror image's, whichever is fewer."""
    return min(
        int(np.bitwise_count(hashes.phash[a] ^ hashes.phash[b])),
        int(np.bitwise_count(hashes.phash[a] ^ hashes.phash_mirror[b])),
    )


def spans_splits(splits: Sequence[str | None]) -> bool:
    """A group whose members sit in more than one split leaks between them."""
    return len(set(splits)) > 1
