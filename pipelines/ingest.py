"""`ingest`: find a dataset's files, check every one of them once, split them, and write the manifest."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines import splits as splitting
from pipelines.archives import ZipLimits
from pipelines.errors import DataError
from pipelines.images import PILLOW_MAX_PIXELS, check_image
from pipelines.label_files import FEW_IMAGES, find_labelled, is_label_file
from pipelines.manifest import Manifest, Record
from pipelines.sources import Found, check_class_name, find_folder, find_zip, write_arrays


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Options of `ingest`. Fractions are of each class's images (stratified)."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    # Images over this many pixels are refused as possible decompression bombs (Pillow's limit or stricter).
    max_image_pixels: int = PILLOW_MAX_PIXELS
    zip_limits: ZipLimits = ZipLimits()  # noqa: RUF009 - frozen, so one shared instance is safe
    # Warn when the largest class has this many times the images of the smallest.
    imbalance_ratio: float = 3.0
    tfds_data_dir: str | None = None
    tfds_download: bool = True
    workers: int = 0  # threads for the file checks; 0: two per CPU core, at most 16
    # Group-aware split (`pipelines.groups`): a regex whose first capture group of each file name is its group, or
    # a groups.csv (file,group). None and None: the data root's groups.csv when there is one, else no groups.
    group_by: str | None = None
    groups_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction} must be "
                "below 1 so that training keeps some images"
            )
        if not 0 < self.max_image_pixels <= PILLOW_MAX_PIXELS:
            raise ValueError(
                f"max_image_pixels={self.max_image_pixels} must be in 1..{PILLOW_MAX_PIXELS} "
                "(Pillow's decompression-bomb limit or stricter)"
            )


def _is_arrays(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 3 and not isinstance(data[0], (str, os.PathLike))


def _find(data: Any, data_dir: Path, config: IngestConfig) -> Found:
    from pipelines.sample import sample_dataset_path

    if data is None:
        return find_folder(sample_dataset_path(), source="embedded sample (CIFAR-10 subset)")
    if _is_arrays(data):
        images, labels, class_names = data
        data_dir.mkdir(parents=True, exist_ok=True)
        return write_arrays(images, labels, class_names, tempfile.mkdtemp(prefix="arrays-", dir=data_dir))
    if (isinstance(data, str) and data.startswith("tfds:")) or type(data).__module__.startswith("tensorflow_datasets"):
        from pipelines.tfds_source import find_tfds

        name = data if isinstance(data, str) else data.name
        data_dir.mkdir(parents=True, exist_ok=True)
        dest = tempfile.mkdtemp(prefix=f"tfds-{name.removeprefix('tfds:').replace('/', '_')}-", dir=data_dir)
        return find_tfds(data, dest, data_dir=config.tfds_data_dir, download=config.tfds_download)
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(
            f"cannot read data of type {type(data).__name__}; give a folder, a .zip, 'tfds:NAME' or "
            "(images, labels, class_names)"
        )
    path = Path(data).expanduser()
    if path.is_file() and is_label_file(path):  # multi-label: image,labels rows next to a folder of images
        return find_labelled(path)
    if path.suffix.lower() == ".zip" or (path.is_file() and zipfile.is_zipfile(path)):
        return find_zip(path, data_dir / "extracted", config.zip_limits)
    if path.is_file():
        raise DataError(
            f"{path} is a single file; give a folder of class folders (or a .zip of one), "
            "e.g. data/cats/*.jpg and data/dogs/*.jpg"
        )
    return find_folder(path)


def ingest(
    data: Any = None,
    workdir: str | os.PathLike | None = None,
    config: IngestConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> Manifest:
    """Read a dataset, check every file once with Pillow, split it, and return (and save) its manifest.

    data: a folder of class folders (optionally with train/ val/ test/ at the top), a .zip of the same, "tfds:NAME"
        or a `tfds` builder, a tuple (images, labels, class_names), None for the embedded sample, or a multi-label
        CSV/JSONL file of `image,labels` rows next to its images (`pipelines.label_files`).
    workdir: where extracted archives, normalised image copies and `manifest.json` go (a run directory, say).
        None: a new temporary directory, which the caller may delete once done with the data.
    overrides: IngestConfig fields, e.g. `seed=1, test_fraction=0.2`.
    progress: called as progress(done, total) while files are checked.

    Raises DataError when the data cannot be used (no file is ever skipped silently: unusable files are in the
    manifest as quarantined, with the reason).
    """
    config = dataclasses.replace(config or IngestConfig(), **overrides)
    # Absolute, like every path the sources return: the manifest must work from any working directory (B1).
    workdir = Path(os.path.abspath(workdir if workdir is not None else tempfile.mkdtemp(prefix="workbench-data-")))
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    found = _find(data, data_dir, config)
    for name in found.classes:  # folders were checked as they were found; TFDS names are checked here
        check_class_name(name, found.source)
    records = _check_files(found, data_dir / "normalised", config, progress)
    records, grouping, group_warnings = _groups(found, records, config)
    found.warnings.extend(group_warnings)
    manifest = _split(found, records, config)
    manifest.grouping = grouping
    manifest.dataset_version = _dataset_version(found)
    manifest.save(workdir / "manifest.json")
    return manifest


def _groups(found: Found, records: list[Record], config: IngestConfig) -> tuple[list[Record], str, list[str]]:
    """The records with their `group` set, what the groups came from ("" for none), and warnings."""
    from pipelines import groups as grouping

    root = found.root or (os.path.commonpath([r.path for r in records]) if records else "")
    if config.group_by and config.groups_file:
        raise DataError("give either --group-by REGEX or a groups file, not both")
    if config.group_by:
        ids, unmatched = grouping.groups_from_names([r.path for r in records], config.group_by)
        warnings = (
            [f"--group-by {config.group_by!r} matched no group in {unmatched} file name(s); each is a group of its own"]
            if unmatched
            else []
        )
        source = f"file names, --group-by {config.group_by!r}"
    else:
        csv_path = Path(config.groups_file) if config.groups_file else Path(root) / grouping.GROUPS_FILE
        if not config.groups_file and not (root and csv_path.is_file()):
            return records, "", []
        table = grouping.read_groups_csv(csv_path)
        keys = [Path(os.path.relpath(r.path, root)).as_posix() for r in records]
        ids = [table.get(k, "") for k in keys]
        unknown = len(set(table) - set(keys))
        warnings = [f"{csv_path}: {unknown} file(s) listed are not in the data and were ignored"] if unknown else []
        source = str(csv_path)
    return [dataclasses.replace(r, group=g) for r, g in zip(records, ids, strict=True)], source, warnings


def _dataset_version(found: Found) -> dict | None:
    """The data root's dataset.json (written by `workbench audit --apply`): which version of the data this is."""
    import json

    path = Path(found.root) / "dataset.json" if found.root else None
    if path is None or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != "workbench-dataset-version":
        return None
    parent = info.get("parent") if isinstance(info.get("parent"), dict) else {}
    return {"id": str(info.get("id", "")), "created": str(info.get("created", "")), "parent": parent.get("source", "")}


def _check_files(found: Found, normalised_dir: Path, config: IngestConfig, progress) -> list[Record]:
    workers = config.workers or min(16, 2 * (os.cpu_count() or 1))
    total = len(found.files)

    def check(f):
        result = check_image(f.path, max_pixels=config.max_image_pixels, normalised_dir=normalised_dir)
        return Record(
            path=os.path.abspath(f.path),
            label=f.label,
            split=f.split if result.ok else None,
            width=result.width,
            height=result.height,
            format=result.format,
            status="ok" if result.ok else "quarantined",
            reason=result.reason,
            decode_path=os.path.abspath(result.decode_path) if result.ok else "",
            labels=f.labels,
        )

    records = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for i, record in enumerate(pool.map(check, found.files), 1):
            records.append(record)
            if progress is not None:
                progress(i, total)
    return records


def _split(found: Found, records: list[Record], config: IngestConfig) -> Manifest:
    """The manifest: every record assigned to a split, with the warnings a user should read, in a fixed order."""
    if found.multi_label:
        if any(r.group for r in records):
            # Iterative stratification places images one by one; it does not keep groups together yet, and a
            # grouping recorded but not honoured would promise a leak-free split that is not.
            raise DataError(
                f"{found.source}: group-aware splits (--group-by, groups.csv) are not supported for multi-label "
                "data yet; remove the --group-by option (or the groups.csv next to the labels file)"
            )
        return _split_multi_label(found, records, config)
    _check_classes(found, records)
    present = {r.split for r in records if r.ok and r.split}
    # A split the user's folders already hold is kept as is; a missing one is carved from their training images.
    carve_val = config.val_fraction if "val" not in present else 0.0
    carve_test = config.test_fraction if "test" not in present else 0.0
    warnings = list(found.warnings)
    if found.user_splits:
        warnings += _user_split_warnings(found, records, present, carve_val, carve_test, config.seed)
    out, short = _assign_splits(found, records, config.seed, carve_val, carve_test)
    warnings += short
    warnings += _balance_warnings(out, config.imbalance_ratio)
    return Manifest(found.source, list(found.classes), out, warnings, config.seed, found.user_splits, found.root)


def _check_classes(found: Found, records: list[Record]) -> None:
    """Refuse data with fewer than two classes, or with a class that has no usable image."""
    usable = collections.Counter(r.label for r in records if r.ok)
    bad = collections.Counter(r.label for r in records if not r.ok)
    if len(found.classes) < 2:
        only = f"only one class, {found.classes[0]!r}" if found.classes else "no classes"
        raise DataError(
            f"{found.source} has {only}; a classifier needs at least two classes, each in its own folder of images"
        )
    empty = [c for c in found.classes if usable[c] == 0]
    if empty:
        details = "; ".join(
            f"{c!r} ({bad[c]} file(s), all quarantined: {next(r.reason for r in records if r.label == c and not r.ok)})"
            if bad[c]
            else f"{c!r} (no files)"
            for c in empty
        )
        raise DataError(
            f"{found.source}: class(es) with no usable image: {details}. Add images to each class "
            "folder or remove the folder"
        )


def _user_split_warnings(
    found: Found, records: list[Record], present: set, carve_val: float, carve_test: float, seed: int
) -> list[str]:
    """Warnings about the user's own split folders (carved splits, classes missing from a split); a class with no
    training image is an error."""
    warnings = []
    for split, fraction in (("val", carve_val), ("test", carve_test)):
        if fraction:
            warnings.append(
                f"the data has no {split} split: {fraction:.0%} of each class's training images "
                f"became {split} images (stratified, seed {seed})"
            )
    missing = [
        f"{c!r} has no {s} image"
        for s in sorted(present)
        for c in found.classes
        if not any(r.ok and r.label == c and r.split == s for r in records)
    ]
    if missing:
        warnings.append("user splits: " + "; ".join(missing))
    no_train = [c for c in found.classes if not any(r.ok and r.label == c and r.split == "train" for r in records)]
    if no_train:
        raise DataError(
            f"{found.source}: class(es) {', '.join(map(repr, no_train))} have no usable image in "
            "train/; add training images for them"
        )
    return warnings


def _assign_splits(
    found: Found, records: list[Record], seed: int, carve_val: float, carve_test: float
) -> tuple[list[Record], list[str]]:
    """The records with their splits assigned, and a warning per class too small to fill every carved split."""
    # Stratified assignment: per class, over the pool (no user splits) or the user's train files (carving).
    # Keys are paths relative to the dataset root, so a fresh extraction of the same archive splits the same way.
    root = found.root or (os.path.commonpath([r.path for r in records]) if records else "")
    pool: dict[str, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(records):
        if r.ok and r.split in (None, "train"):
            pool[r.label].append(i)
    out, warnings = list(records), []
    if found.user_splits and not (carve_val or carve_test):
        return out, warnings
    if any(r.group for r in records):
        return _assign_grouped(found, records, seed, carve_val, carve_test, root)
    for label in found.classes:
        indices = pool[label]
        keys = [os.path.relpath(records[i].path, root) for i in indices]
        assigned = splitting.assign(keys, seed=seed, val_fraction=carve_val, test_fraction=carve_test)
        for i, split in zip(indices, assigned, strict=True):
            out[i] = dataclasses.replace(records[i], split=split)
        n = len(indices)
        _n_train, n_val, n_test = splitting.split_counts(n, carve_val, carve_test)
        short = [s for s, k, frac in (("val", n_val, carve_val), ("test", n_test, carve_test)) if frac and k == 0]
        if short:
            warnings.append(
                f"class {label!r} has only {n} usable image(s) to split, so it has no "
                f"{' and no '.join(short)} image; add at least 3 images per class"
            )
    return out, warnings


def _assign_grouped(
    found: Found, records: list[Record], seed: int, carve_val: float, carve_test: float, root: str
) -> tuple[list[Record], list[str]]:
    """`_assign_splits` with groups: every group of the pool on one side (`pipelines.groups.assign_grouped`)."""
    from pipelines.groups import assign_grouped

    indices = [i for i, r in enumerate(records) if r.ok and r.split in (None, "train")]
    assigned = assign_grouped(
        [os.path.relpath(records[i].path, root) for i in indices],
        [records[i].label for i in indices],
        [records[i].group for i in indices],
        classes=found.classes,
        seed=seed,
        val_fraction=carve_val,
        test_fraction=carve_test,
    )
    out = list(records)
    for i, split in zip(indices, assigned, strict=True):
        out[i] = dataclasses.replace(records[i], split=split)
    return out, []


def _balance_warnings(records: list[Record], imbalance_ratio: float) -> list[str]:
    """Warnings about class imbalance (largest / smallest class at least `imbalance_ratio`) and quarantined files."""
    warnings = []
    counts = collections.Counter(r.label for r in records if r.ok)
    largest, smallest = max(counts.values()), min(counts.values())
    if smallest and largest / smallest >= imbalance_ratio:
        big = max(counts, key=counts.get)
        small = min(counts, key=counts.get)
        warnings.append(
            f"classes are imbalanced: {big!r} has {largest} images, {largest / smallest:.1f}x the "
            f"{smallest} of {small!r}; add images to small classes or use class weights"
        )
    quarantined = [r for r in records if not r.ok]
    if quarantined:
        warnings.append(f"{len(quarantined)} file(s) quarantined (not used); see the list of quarantined files")
    return warnings


def _split_multi_label(found: Found, records: list[Record], config: IngestConfig) -> Manifest:
    """A multi-label manifest: iterative stratification over the usable records, and warnings about labels on few
    images, labels missing from a split, and images with no label (allowed, counted)."""
    usable = [i for i, r in enumerate(records) if r.ok]
    counts = collections.Counter(label for i in usable for label in records[i].labels)
    lost = [c for c in found.classes if counts[c] == 0]
    if lost:
        raise DataError(
            f"{found.source}: label(s) {', '.join(map(repr, lost))} have no usable image (every file that carries "
            "them is quarantined); fix those files or remove the label from their rows"
        )
    index = {name: i for i, name in enumerate(found.classes)}
    root = found.root or os.path.commonpath([r.path for r in records])
    assigned = splitting.iterative_assign(
        [[index[label] for label in records[i].labels] for i in usable],
        [os.path.relpath(records[i].path, root) for i in usable],
        num_labels=len(found.classes),
        seed=config.seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
    )
    out = list(records)
    for i, split in zip(usable, assigned, strict=True):
        out[i] = dataclasses.replace(records[i], split=split)
    warnings = list(found.warnings)
    few = [f"{c!r} ({counts[c]})" for c in found.classes if counts[c] < FEW_IMAGES]
    if few:
        warnings.append(
            f"label(s) on fewer than {FEW_IMAGES} images: {', '.join(few)}; their thresholds and scores rest on one "
            "or two validation and test images: add images that carry them"
        )
    wanted = [s for s, fraction in (("val", config.val_fraction), ("test", config.test_fraction)) if fraction]
    for split in wanted:
        present = {label for r in out if r.ok and r.split == split for label in r.labels}
        if missing := [c for c in found.classes if c not in present]:
            warnings.append(
                f"the {split} split has no image of label(s) {', '.join(map(repr, missing))} (too few images to "
                "place one in every split); add at least 3 images per label"
            )
    if empty := sum(1 for i in usable if not records[i].labels):
        warnings.append(f"{empty} image(s) have no label (allowed: the model learns that none of the labels applies)")
    quarantined = [r for r in records if not r.ok]
    if quarantined:
        warnings.append(f"{len(quarantined)} file(s) quarantined (not used); see the list of quarantined files")
    return Manifest(found.source, list(found.classes), out, warnings, config.seed, False, found.root, multi_label=True)
