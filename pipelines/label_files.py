"""Multi-label data: a CSV or JSONL file of `image,labels` rows next to a folder of images.

    photos/labels.csv          image,labels
                               img/beach.jpg,sea;sky;sand
                               img/street.jpg,"[""car"", ""sky""]"
                               img/blank.jpg,
    photos/labels.jsonl        {"image": "img/beach.jpg", "labels": ["sea", "sky", "sand"]}

Image paths are relative to the label file's folder (POSIX slashes); a path that leaves that folder is refused.
Labels are separated by `;` or given as a JSON list; an empty field is an image with no label (allowed, and
counted in the report). Every label must be a name `labels.txt` can hold (`sources.check_class_name`).

What is refused, each with the line it is on (a wrong file caught here costs seconds, not a training run):
a row naming an image that does not exist, an image listed twice, a label listed twice in a row, an empty label
(`a;;b`), a label containing the separator `;` (possible in a JSON list), a CSV row with more fields than
`image,labels` (a comma inside an unquoted label list). Image files under the folder that no row names are
ignored and named in a warning.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path, PurePosixPath

from pipelines.errors import DataError
from pipelines.sources import IMAGE_SUFFIXES, Found, FoundFile, check_class_name, class_name

LABEL_FILE_SUFFIXES = (".csv", ".jsonl")
SEPARATOR = ";"
HEADER = ("image", "labels")
# A label on fewer images than this gets a warning: a threshold tuned on one or two validation images means little.
FEW_IMAGES = 5
_NAMED = 5  # files named in a warning or error before "and N more"


def is_label_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a multi-label file (by its suffix): ingest then reads it with `find_labelled`."""
    return Path(path).suffix.lower() in LABEL_FILE_SUFFIXES


def _where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def _split_labels(field: str, where: str) -> list[str]:
    """The labels of one CSV field: a JSON list (`["a", "b"]`) or names separated by `;`; empty: no label."""
    text = field.strip()
    if text.startswith("["):
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: the labels {text!r} are not a valid JSON list ({exc.msg}); fix the list"
            ) from None
        return _list_labels(labels, where)
    if not text:
        return []
    parts = [part.strip() for part in text.split(SEPARATOR)]
    if any(not part for part in parts):
        raise DataError(
            f"{where}: the labels {text!r} hold an empty label (two '{SEPARATOR}' in a row, or one at an end); remove it"
        )
    return parts


def _list_labels(labels: object, where: str) -> list[str]:
    """The labels of a JSON value: a list of strings, or one string of names separated by `;`."""
    if isinstance(labels, str):
        return _split_labels(labels, where)
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise DataError(
            f"{where}: labels must be a list of strings or a '{SEPARATOR}'-separated string, got {labels!r}"
        )
    for label in labels:
        if SEPARATOR in label:
            raise DataError(
                f"{where}: the label {label!r} contains the separator '{SEPARATOR}', so the CSV form and the "
                f"reports could not tell it from two labels; rename it without '{SEPARATOR}'"
            )
    return [label.strip() for label in labels]


def _checked(labels: list[str], where: str) -> tuple[str, ...]:
    names = [check_class_name(class_name(label), where) for label in labels]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"{where}: the label(s) {', '.join(map(repr, twice))} are listed twice; list each once")
    return tuple(names)


def _csv_rows(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header[:2]) != HEADER or len(header) != 2:
            raise DataError(
                f"{_where(path, 1)}: the header is {header!r}; the first line must be 'image,labels' (the image "
                f"path relative to the file's folder, then its labels separated by '{SEPARATOR}')"
            )
        rows = []
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != 2:
                raise DataError(
                    f"{_where(path, line)}: {len(fields)} fields where 'image,labels' has 2; separate labels with "
                    f"'{SEPARATOR}', or quote a field that holds a comma"
                )
            rows.append(
                (line, fields[0].strip(), _checked(_split_labels(fields[1], _where(path, line)), _where(path, line)))
            )
    return rows


def _jsonl_rows(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not text.strip():
            continue
        where = _where(path, line)
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f'{where}: not a JSON object ({exc.msg}); write one {{"image": ..., "labels": [...]}} per line'
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise DataError(
                f'{where}: each line must be an object with an "image" path and "labels", got {text.strip()[:80]!r}'
            )
        rows.append((line, row["image"].strip(), _checked(_list_labels(row.get("labels", []), where), where)))
    return rows


def read_label_rows(path: str | os.PathLike) -> list[tuple[int, str, tuple[str, ...]]]:
    """`(line number, image path as written, labels)` of every row of a CSV or JSONL label file, checked."""
    path = Path(path)
    try:
        rows = _jsonl_rows(path) if path.suffix.lower() == ".jsonl" else _csv_rows(path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}); check its quotes") from None
    first_line: dict[str, int] = {}
    for line, image, _ in rows:
        if not image:
            raise DataError(
                f"{_where(path, line)}: the image path is empty; give the image's path relative to {path.parent}"
            )
        key = PurePosixPath(image.replace("\\", "/")).as_posix()
        if key in first_line:
            raise DataError(
                f"{_where(path, line)}: the image {image!r} is listed again (first on line {first_line[key]}); "
                "give each image one row with all its labels"
            )
        first_line[key] = line
    return rows


def _resolve(root: Path, image: str, where: str) -> Path:
    """The image's absolute path; one outside `root` (absolute, or through `..`) is refused."""
    relative = PurePosixPath(image.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"{where}: the image path {image!r} leaves the folder {root}; give paths relative to it")
    return root.joinpath(*relative.parts)


def _unlisted(root: Path, label_file: Path, listed: set[Path]) -> list[Path]:
    """Image files under `root` that no row names (hidden folders skipped, links not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and path not in listed:
                found.append(path)
    return found


def _named(paths: list[str]) -> str:
    more = f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else ""
    return ", ".join(paths[:_NAMED]) + more


def find_labelled(label_file: str | os.PathLike) -> Found:
    """The images and labels a CSV/JSONL label file lists (see the module); raises DataError naming the line."""
    label_file = Path(os.path.abspath(label_file))
    root = label_file.parent
    rows = read_label_rows(label_file)
    if not rows:
        raise DataError(f"{label_file} lists no image; add one 'image,labels' row per image")
    files, missing = [], []
    for line, image, labels in rows:
        path = _resolve(root, image, _where(label_file, line))
        if not (path.is_file() or path.is_symlink()):  # a broken link is kept: the check quarantines it
            missing.append(f"line {line}: {image}")
            continue
        files.append(FoundFile(path, SEPARATOR.join(labels), None, labels))
    if missing:
        raise DataError(
            f"{label_file}: {len(missing)} row(s) name images that do not exist under {root} ({_named(missing)}); "
            "fix the paths (relative to the label file's folder) or remove the rows"
        )
    classes = sorted({label for f in files for label in f.labels})
    if not classes:
        raise DataError(f"{label_file}: no row has a label; give each image its labels separated by '{SEPARATOR}'")
    warnings = []
    unlisted = _unlisted(root, label_file, {f.path for f in files})
    if unlisted:
        warnings.append(
            f"{len(unlisted)} image(s) under {root} have no row in {label_file.name} and were ignored "
            f"({_named([p.relative_to(root).as_posix() for p in unlisted])}); add a row (an empty label list is "
            "allowed) to use them"
        )
    return Found(
        str(label_file), classes, files, user_splits=False, warnings=warnings, root=str(root), multi_label=True
    )
