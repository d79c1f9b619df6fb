"""Finding the files and labels of a dataset: folders, zip archives, in-memory arrays (TFDS: `tfds_source`).

Layouts understood (a single wrapping top folder around either is accepted):

    root/<class>/**/<image>                          one pool; ingest splits it
    root/{train,val|validation,test}/<class>/**/<image>   the user's own splits, respected

Class names are Unicode NFC, so a folder named on macOS (NFD) and the same name typed elsewhere are one class.
Names that `labels.txt` (one class per line, read back with `str.splitlines` and stripped) cannot carry as they
are, those with line breaks, other control characters or white space at either end, are refused with a message
(hardening report, findings C1 and C2): refusing is clearer than renaming a class behind the user's back.

Only regular files are taken: a FIFO would block the check forever, a device file could have side effects
(finding A8). With `train/` and another split folder at the top, other folders are ignored with a warning rather
than turning the split folders into classes (finding C3).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import unicodedata
from pathlib import Path

import numpy as np

from pipelines.archives import ZipLimits, extract_zip, is_ignored
from pipelines.errors import DataError

# Folder names recognised as user splits, mapped to ours (compared case-insensitively).
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

# Extensions that mark a loose file (outside any class folder) as a forgotten image rather than documentation.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".jfif"})


@dataclasses.dataclass(frozen=True)
class FoundFile:
    path: Path
    label: str
    split: str | None  # the user's split, or None when ingest should split
    labels: tuple[str, ...] | None = None  # multi-label data (`label_files`): every label; `label` joins them


@dataclasses.dataclass
class Found:
    """Files and labels found in a source, before any image is opened."""

    source: str
    classes: list[str]  # every class seen, including ones whose folders turn out empty
    files: list[FoundFile]
    user_splits: bool
    warnings: list[str] = dataclasses.field(default_factory=list)
    root: str = ""  # folder the paths are shown relative to
    multi_label: bool = False  # from a CSV/JSONL label file: each file has a set of labels (`FoundFile.labels`)


def class_name(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'control character')}"


def check_class_name(name: str, where: str) -> str:
    """Return `name`, or raise DataError (naming `where`, e.g. the folder) when labels.txt cannot hold it as is.

    labels.txt holds one class per line and is read back with `str.splitlines()`, which also splits on U+2028,
    U+2029, U+0085, \\x0b, \\x0c and \\x1c-\\x1e; one such class became several labels (finding C1). Every control
    character is refused (escape sequences would also reach terminals). Readers strip each line, so a name with
    white space at an end would differ between the run and its exports (finding C2).
    """
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise DataError(
            f"{where}: the class name {name!r} contains {_describe(bad)}, a line break or control character that "
            "labels.txt (one class per line) cannot hold; rename it without that character"
        )
    if name != name.strip():
        raise DataError(
            f"{where}: the class name {name!r} starts or ends with white space, which labels.txt readers drop, so "
            f"the exported labels would differ from the run's; rename it to {name.strip()!r}"
        )
    if not name:
        raise DataError(f"{where}: a class name is empty; give every class a name")
    return name


def _visible(entry: os.DirEntry | Path) -> bool:
    name = entry.name
    return not name.startswith(".") and not is_ignored((name,)) and name not in ("__MACOSX",)


def _listdir(path: Path) -> tuple[list[Path], list[Path]]:
    dirs, files = [], []
    with os.scandir(path) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if not _visible(entry):
                continue
            (dirs if entry.is_dir() else files).append(Path(entry.path))
    return dirs, files


def _walk_files(folder: Path, special: list[Path]) -> list[Path]:
    """Every visible regular file under `folder`, recursively, in a stable order (files first, then sub-folders).

    Symlinked folders are not followed. FIFOs, sockets and device files are added to `special` and never opened
    (finding A8). A broken link is kept, so that the check quarantines it with a reason instead of hiding it.
    """
    out: list[Path] = []
    stack = [folder]
    while stack:
        files, dirs = [], []
        with os.scandir(stack.pop()) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.name.startswith(".") or entry.name == "__MACOSX" or is_ignored((entry.name,)):
                    continue
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(path)
                elif entry.is_file() or (entry.is_symlink() and not os.path.exists(path)):
                    files.append(path)
                elif not entry.is_dir():  # a link to a folder is skipped, as os.walk(followlinks=False) does
                    special.append(path)
        out.extend(files)
        stack.extend(reversed(dirs))
    return out


def _split_dirs(root: Path, dirs: list[Path]) -> tuple[list[Path], list[Path]] | None:
    """(split folders, other folders) when `dirs` hold the user's splits; None when they are class folders.

    Splits need a `train` folder with class folders inside, and either nothing else or another split folder:
    `train/` alone next to `cars/` may well be a class named "train" (with sub-folders of its own).
    """
    splits = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    names = [SPLIT_ALIASES[d.name.lower()] for d in splits]
    if "train" not in names or (len(splits) < len(dirs) and len(set(names)) < 2):
        return None
    if not all(_listdir(d)[0] for d in splits):  # each split holds class folders
        return None
    for split in sorted(set(names)):
        same = [d.name for d, n in zip(splits, names, strict=True) if n == split]
        if len(same) > 1:
            raise DataError(
                f"{root}: the folders {', '.join(same)} all hold the {split} split (split names are matched "
                "ignoring case); merge them into one folder"
            )
    return splits, [d for d in dirs if d not in splits]


def _case_warnings(classes: set[str]) -> list[str]:
    by_fold = collections.defaultdict(list)
    for name in sorted(classes):
        by_fold[name.casefold()].append(name)
    return [
        f"class folders {' and '.join(map(repr, names))} differ only in case: two classes here, but one folder on "
        "case-insensitive file systems (macOS, Windows), where this dataset fails; rename or merge them"
        for names in by_fold.values()
        if len(names) > 1
    ]


def check_local_source(data: str | os.PathLike) -> None:
    """A data folder or .zip named by path must exist. Cheap (no listing): `RunConfig.validate` calls it so a
    typo is refused before a run directory is made."""
    if not str(data).startswith("tfds:") and not Path(data).exists():
        raise DataError(f"data folder {data} does not exist; give a folder of class folders, a .zip, or tfds:NAME")


def find_folder(root: str | os.PathLike, source: str | None = None) -> Found:
    """Find class folders (and user splits) under `root`. Paths are absolute, so a manifest works from anywhere."""
    root = Path(root)
    check_local_source(root)
    if not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a .zip archive; give a folder of class folders")
    source = source or str(root)
    root = top = Path(os.path.abspath(root))
    dirs, files = _listdir(root)
    # A single wrapping folder (e.g. `flowers/` inside `flowers.zip`): look inside it.
    while len(dirs) == 1 and not files and _split_dirs(root, dirs) is None and _listdir(dirs[0])[0]:
        root = dirs[0]
        dirs, files = _listdir(root)
    warnings = []
    loose_images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if loose_images:  # other loose files (README, LICENSE, CSV) are documentation, not data
        warnings.append(
            f"{len(loose_images)} image(s) directly in {root} are not inside a class folder and were ignored "
            f"(e.g. {loose_images[0].name}); move them into a folder named after their class"
        )
    found_files: list[FoundFile] = []
    classes: set[str] = set()
    special: list[Path] = []
    layout = _split_dirs(root, dirs)
    if layout is not None:
        split_dirs, others = layout
        if others:
            warnings.append(
                f"folder(s) {', '.join(d.name for d in others)} in {root} are not splits (train, val, test) and "
                f"were ignored, next to the split folders {', '.join(d.name for d in split_dirs)}; move them into "
                "a split folder, or out of the dataset"
            )
        for split_dir in split_dirs:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            class_dirs, loose = _listdir(split_dir)
            if loose := [f for f in loose if f.suffix.lower() in IMAGE_SUFFIXES]:
                warnings.append(
                    f"{len(loose)} file(s) directly in {split_dir} are not inside a class folder and were ignored"
                )
            for class_dir in class_dirs:
                label = check_class_name(class_name(class_dir.name), f"class folder in {split_dir}")
                classes.add(label)
                found_files.extend(FoundFile(p, label, split) for p in _walk_files(class_dir, special))
    else:
        for class_dir in dirs:
            label = check_class_name(class_name(class_dir.name), f"class folder in {root}")
            classes.add(label)
            found_files.extend(FoundFile(p, label, None) for p in _walk_files(class_dir, special))
    if not classes:
        raise DataError(
            f"{source} holds no class folders; put the images of each class in a folder named after the class "
            "(e.g. data/cats/*.jpg, data/dogs/*.jpg)"
        )
    if special:
        warnings.append(
            f"{len(special)} special file(s) (FIFO, socket or device) were ignored and never opened, e.g. "
            f"{special[0].relative_to(top)}; only regular files are read"
        )
    warnings.extend(_case_warnings(classes))
    return Found(source, sorted(classes), found_files, layout is not None, warnings, root=str(top))


def find_zip(archive: str | os.PathLike, extract_to: str | os.PathLike, limits: ZipLimits) -> Found:
    """Extract a zip archive safely into a new folder under `extract_to`, then read it as a folder."""
    dest = extract_zip(archive, extract_to, limits)
    return find_folder(dest, source=str(archive))


def write_arrays(images, labels, class_names, dest: str | os.PathLike) -> Found:
    """Write in-memory images (N, H, W[, C]) and labels (N,) or one-hot (N, C) as PNG files for ingest.

    Going through files keeps one path for every source: the same checks, the same manifest, the same tf.data
    input, and evaluation can name every example.
    """
    from PIL import Image

    images = np.asarray(images)
    labels = np.asarray(labels)
    class_names = [
        check_class_name(class_name(str(c)), f"in-memory class_names[{i}]") for i, c in enumerate(class_names)
    ]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise DataError(f"in-memory images have shape {images.shape}; expected (N, H, W) or (N, H, W, 1|3|4)")
    if labels.ndim == 2:  # one-hot or soft labels
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if len(labels) != len(images):
        raise DataError(f"in-memory data has {len(images)} images but {len(labels)} labels; give one label per image")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise DataError("in-memory labels must be class indices (integers) or one-hot rows")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(
            f"in-memory labels range over {labels.min()}..{labels.max()} but there are "
            f"{len(class_names)} class names; give one name per label index"
        )
    if len(set(class_names)) != len(class_names):
        raise DataError(f"class names are not unique: {class_names}")
    if images.dtype != np.uint8:
        if images.size and (np.nanmin(images) < 0 or np.nanmax(images) > 255):
            raise DataError("in-memory images must be uint8 or floats in [0, 255] (values outside were found)")
        if images.size and np.nanmax(images) <= 1.0:
            raise DataError(
                "in-memory float images look scaled to [0, 1]; give them in [0, 255] "
                "(the model normalises its input itself)"
            )
        images = np.clip(np.rint(np.nan_to_num(images)), 0, 255).astype(np.uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    dest = Path(dest)
    files = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = dest / f"{label:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:07d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        files.append(FoundFile(path, class_names[label], None))
    return Found(
        f"in-memory arrays ({len(images)} images)", list(class_names), files, user_splits=False, root=str(dest)
    )
