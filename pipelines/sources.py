"""Finding the files and labels of a dataset: folders, zip archives, in-memory arrays (TFDS: `tfds_source`).

Layouts understood (a single wrapping top folder around either is accepted):

    root/<class>/**/<image>                          one pool; ingest splits it
    root/{train,val|validation,test}/<class>/**/<image>   the user's own splits, respected

Class names are Unicode NFC, so a folder named on macOS (NFD) and the same name typed elsewhere are one class.
"""

from __future__ import annotations

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


@dataclasses.dataclass
class Found:
    """Files and labels found in a source, before any image is opened."""

    source: str
    classes: list[str]  # every class seen, including ones whose folders turn out empty
    files: list[FoundFile]
    user_splits: bool
    warnings: list[str] = dataclasses.field(default_factory=list)
    root: str = ""  # folder the paths are shown relative to


def class_name(name: str) -> str:
    return unicodedata.normalize("NFC", name)


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


def _walk_files(folder: Path) -> list[Path]:
    """Every visible file under `folder`, recursively, in a stable order (symlinked folders are not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and not is_ignored((f,)))
    return out


def _split_layout(dirs: list[Path]) -> bool:
    names = [SPLIT_ALIASES.get(d.name.lower()) for d in dirs]
    if not dirs or None in names or "train" not in names or len(set(names)) != len(names):
        return False
    return all(_listdir(d)[0] for d in dirs)  # each split holds class folders


def find_folder(root: str | os.PathLike, source: str | None = None) -> Found:
    """Find class folders (and user splits) under `root`."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist; give a folder of class folders, a .zip, or tfds:NAME")
    if not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a .zip archive; give a folder of class folders")
    source = source or str(root)
    top = root
    dirs, files = _listdir(root)
    # A single wrapping folder (e.g. `flowers/` inside `flowers.zip`): look inside it.
    while len(dirs) == 1 and not files and not _split_layout(dirs) and _listdir(dirs[0])[0]:
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
    user_splits = _split_layout(dirs)
    if user_splits:
        for split_dir in dirs:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            class_dirs, loose = _listdir(split_dir)
            if loose := [f for f in loose if f.suffix.lower() in IMAGE_SUFFIXES]:
                warnings.append(
                    f"{len(loose)} file(s) directly in {split_dir} are not inside a class folder and were ignored"
                )
            for class_dir in class_dirs:
                label = class_name(class_dir.name)
                classes.add(label)
                found_files.extend(FoundFile(p, label, split) for p in _walk_files(class_dir))
    else:
        for class_dir in dirs:
            label = class_name(class_dir.name)
            classes.add(label)
            found_files.extend(FoundFile(p, label, None) for p in _walk_files(class_dir))
    if not classes:
        raise DataError(
            f"{source} holds no class folders; put the images of each class in a folder named after the class "
            "(e.g. data/cats/*.jpg, data/dogs/*.jpg)"
        )
    return Found(source, sorted(classes), found_files, user_splits, warnings, root=str(top))


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
    class_names = [class_name(str(c)) for c in class_names]
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
