"""Stratified, seeded train/val/test assignment.

Single-label data: each file's place is decided by a hash of (seed, its path relative to the dataset root), so the same seed and the
same files always give the same split, and adding a file to one class never reshuffles the others.
Multi-label data: `iterative_assign`, iterative stratification, so every label appears in every split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for a class of n images.

    Rounded fractions, except that with at least 3 images every requested split gets one image and train keeps
    at least one: a class must appear in every split for per-class metrics to mean anything.
    """
    val = round(n * val_fraction)
    test = round(n * test_fraction)
    if n >= 3:
        val = max(val, 1 if val_fraction > 0 else 0)
        test = max(test, 1 if test_fraction > 0 else 0)
    elif n == 2:
        val, test = (1 if val_fraction > 0 else 0), (1 if test_fraction > 0 and val_fraction == 0 else 0)
    else:
        val = test = 0
    while val + test > n - 1 and (val or test):  # keep at least one training image
        if test >= val and test:
            test -= 1
        else:
            val -= 1
    return n - val - test, val, test


def order_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def assign(keys: Sequence[str], *, seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Split names for `keys` (the files of ONE class), in the same order as `keys`."""
    n_train, n_val, _ = split_counts(len(keys), val_fraction, test_fraction)
    ranked = sorted(range(len(keys)), key=lambda i: order_key(seed, keys[i]))
    out = ["test"] * len(keys)
    for rank, i in enumerate(ranked):
        out[i] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


def iterative_assign(
    label_sets: Sequence[Sequence[int]],
    keys: Sequence[str],
    *,
    num_labels: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> list[str]:
    """Split names for multi-label examples by iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011,
    "On the stratification of multi-label data", Algorithm 1), in the order of `label_sets`.

    The rarest label still to place goes first: each of its examples joins the split that most lacks that label,
    then (ties) the split that most lacks examples, then a seeded draw; the example's other labels count as placed
    in that split too. Examples without a label fill the splits that most lack examples. One change from the paper:
    a label's wanted count per split is `split_counts` (whole images, at least one in every requested split from 3
    images on), not the raw fraction, so that every label with 3 or more images appears in every split.

    Deterministic: the same `keys` (paths relative to the dataset), labels and seed give the same splits.
    """
    import random

    names = ("train", "val", "test")
    n = len(label_sets)
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    open_splits = [j for j, f in enumerate(fractions) if f > 0]
    wanted = [n * f for f in fractions]  # examples each split still lacks
    per_label = [[0, 0, 0] for _ in range(num_labels)]
    holders: list[list[int]] = [[] for _ in range(num_labels)]
    for i, labels in enumerate(label_sets):
        for label in set(labels):
            holders[label].append(i)
    for label, members in enumerate(holders):
        per_label[label] = list(split_counts(len(members), val_fraction, test_fraction))
    rng = random.Random(seed)
    order = sorted(range(n), key=lambda i: order_key(seed, keys[i]))
    rank = {i: r for r, i in enumerate(order)}
    out: list[str | None] = [None] * n

    def place(i: int, j: int) -> None:
        out[i] = names[j]
        wanted[j] -= 1
        for label in set(label_sets[i]):
            per_label[label][j] -= 1

    def best(candidates: list[int], *scores) -> int:
        for score in scores:
            top = max(score(j) for j in candidates)
            candidates = [j for j in candidates if score(j) == top]
        return candidates[0] if len(candidates) == 1 else rng.choice(candidates)

    left = {label: set(members) for label, members in enumerate(holders) if members}
    while left:
        label = min(left, key=lambda k: (len(left[k]), order_key(seed, str(k))))
        for i in sorted(left[label], key=rank.__getitem__):
            place(i, best(open_splits, lambda j, label=label: per_label[label][j], lambda j: wanted[j]))
            for other in set(label_sets[i]):
                if other in left:
                    left[other].discard(i)
        left = {k: v for k, v in left.items() if v}
    for i in order:
        if out[i] is None:  # no label: only the split sizes matter
            place(i, best(open_splits, lambda j: wanted[j]))
    return [name or "train" for name in out]
