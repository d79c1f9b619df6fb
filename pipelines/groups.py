"""Group-aware splits: images of one group (a patient, a video, a source, a near-duplicate group) share a split.

Groups come from `--group-by REGEX` (the first capture group of each file NAME; a file it does not match is a
group of its own), or from a `groups.csv` (`file,group`, files relative to the data root). A `groups.csv` in
the data's root folder is used by default; `workbench audit --apply` writes one for the near-duplicate groups
it keeps, so those stay on one side of the split.

The assignment (`assign_grouped`) extends `splits.assign`: per class, the groups whose majority label it is are
ranked by a hash of (seed, group) and take train, val, test in turn until each split's share of the class's
images is reached; every image of a group gets its group's split. Files without a group are groups of one
keyed by their path, so data without groups splits exactly as before.
"""

from __future__ import annotations

import collections
import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

from pipelines import splits as splitting
from pipelines.errors import DataError

GROUPS_FILE = "groups.csv"


def compile_group_by(pattern: str) -> re.Pattern:
    """The regex of `--group-by`; DataError when it does not compile or has no capture group."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"--group-by {pattern!r} is not a valid regular expression ({exc})") from None
    if regex.groups < 1:
        raise DataError(
            f"--group-by {pattern!r} has no capture group; put the group id in parentheses, e.g. '^(patient\\d+)_'"
        )
    return regex


def groups_from_names(paths: Sequence[str], pattern: str) -> tuple[list[str], int]:
    """Each file's group (the first capture group of its file name, else "") and how many names did not match."""
    regex = compile_group_by(pattern)
    out, unmatched = [], 0
    for path in paths:
        m = regex.search(os.path.basename(path))
        if m is None or not m.group(1):
            unmatched += 1
            out.append("")
        else:
            out.append(m.group(1))
    return out, unmatched


def read_groups_csv(path: str | os.PathLike) -> dict[str, str]:
    """`file` (relative to the data root, '/'-separated) → `group` from a groups.csv with those two columns."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"groups file {path} does not exist; give a CSV with columns file,group") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"groups file {path} is not a readable CSV ({exc}); give columns file,group") from None
    if rows and not {"file", "group"} <= set(rows[0]):
        raise DataError(f"groups file {path} has columns {', '.join(rows[0])}; it needs the columns file,group")
    return {Path(r["file"]).as_posix(): r["group"] for r in rows if r.get("file") and r.get("group")}


def assign_grouped(
    keys: Sequence[str],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    classes: Sequence[str],
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> list[str]:
    """Split names for files (`keys`: paths relative to the root; `groups`: "" for none), every group on one side."""
    members: dict[str, list[int]] = collections.defaultdict(list)
    for i, (key, group) in enumerate(zip(keys, groups, strict=True)):
        members[f"group\x00{group}" if group else key].append(i)
    by_class: dict[str, list[str]] = collections.defaultdict(list)
    for unit, idx in members.items():
        counts = collections.Counter(labels[i] for i in idx)
        majority = min(counts, key=lambda c: (-counts[c], classes.index(c)))
        by_class[majority].append(unit)
    out = ["train"] * len(keys)
    for label in classes:
        units = sorted(by_class[label], key=lambda u: splitting.order_key(seed, u))
        n = sum(len(members[u]) for u in units)
        n_train, n_val, _ = splitting.split_counts(n, val_fraction, test_fraction)
        before = 0
        for unit in units:
            split = "train" if before < n_train else "val" if before < n_train + n_val else "test"
            for i in members[unit]:
                out[i] = split
            before += len(members[unit])
    return out
