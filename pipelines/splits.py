"""Stratified, seeded train/val/test assignment.

Each file's place is decided by a hash of (seed, its path relative to the dataset root), so the same seed and the
same files always give the same split, and adding a file to one class never reshuffles the others.
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
