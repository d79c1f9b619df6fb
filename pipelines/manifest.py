"""The manifest: one record per file found, written by `ingest` and read by everything downstream.

`Manifest.classes` (sorted class names) is the single source of truth for label indices.

Multi-label data (a CSV/JSONL label file, `pipelines.label_files`): `Manifest.multi_label` is true and each record's
`labels` holds its set of labels (possibly empty); `label` joins them with `;` for display. Single-label manifests
are written exactly as before (no `labels` or `multi_label` keys).

Paths in memory are absolute. In `manifest.json`, files inside the manifest's own folder (a run's extracted
archive and normalised copies) are stored relative to that folder and every other path absolute, so a run
works from any working directory and keeps working when its folder is moved (hardening report, finding B1).
Manifests written before that held paths relative to the working directory of the ingest; they have no
`"paths"` key and are read as before.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pipelines.errors import DataError
from pipelines.files import atomic_write_text

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST_VERSION = 1
# Value of the "paths" key: relative paths in the file are relative to the manifest's folder (see the docstring).
_RELATIVE_TO_MANIFEST = "relative to the manifest's folder, else absolute"
_PATH_FIELDS = ("path", "decode_path")


def record_labels(record: Record) -> tuple[str, ...]:
    """The labels of a record: its label set (multi-label data), or its one class."""
    return record.labels if record.labels is not None else (record.label,)


def _store(path: str, base: str | None) -> str:
    """`path` as written to a manifest in folder `base`: relative when inside it, absolute otherwise."""
    if not path or base is None:
        return path
    path = os.path.abspath(path)
    try:
        inside = os.path.commonpath([path, base]) == base
    except ValueError:  # different drives (Windows)
        inside = False
    return Path(os.path.relpath(path, base)).as_posix() if inside else path


def _resolve(path: str, base: str) -> str:
    """A path read from a manifest in folder `base` (the inverse of `_store`)."""
    return os.path.normpath(os.path.join(base, path)) if path else path


@dataclasses.dataclass(frozen=True)
class Record:
    """One file of the dataset.

    path: the file as the user knows it (absolute; inside the extraction directory for archives). In memory,
        paths are absolute; manifest.json stores those inside its own folder relative to it (see the module).
    label: class name (index = position in `Manifest.classes`).
    split: "train" | "val" | "test" for usable files, None for quarantined ones.
    width, height: pixels after EXIF orientation; 0 when unreadable.
    format: the format found in the file's bytes (e.g. "JPEG", "PNG"), never the extension; "" when unknown.
    status: "ok" or "quarantined"; reason says why a file was quarantined (or "" when ok).
    decode_path: the file tf.data reads. Equal to `path` when TensorFlow's decoders read the file correctly as is;
        otherwise a normalised 8-bit RGB copy made once by Pillow under the work directory.
    labels: multi-label data only: the record's labels (names in `Manifest.classes`, maybe none); None otherwise.
    """

    path: str
    label: str
    split: str | None
    width: int
    height: int
    format: str
    status: str
    reason: str = ""
    decode_path: str = ""
    group: str = ""  # the group it shares a split with (`pipelines.groups`); "" for none
    labels: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def source_path(self) -> str:
        """The path tf.data decodes (the normalised copy if there is one)."""
        return self.decode_path or self.path

    @property
    def decode_format(self) -> str:
        """Format of `source_path`: normalised copies are JPEG (from JPEG sources) or PNG."""
        if self.decode_path and self.decode_path != self.path:
            return "JPEG" if self.decode_path.endswith(".jpg") else "PNG"
        return self.format


@dataclasses.dataclass
class Manifest:
    """The result of `ingest`: classes, every file's record and the warnings found on the way."""

    source: str
    classes: list[str]
    records: list[Record]
    warnings: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    user_splits: bool = False
    root: str = ""  # the folder the files were found in (the extraction folder for archives)
    grouping: str = ""  # where the records' groups came from (a regex, a groups.csv); "" when the split has none
    # The data's dataset.json (`workbench audit --apply`): {id, created, parent}; None for data that is no version.
    dataset_version: dict | None = None
    multi_label: bool = False  # records carry label sets (`Record.labels`); see the module docstring

    # ----------------------------------------------------------------- queries
    def label_index(self, label: str) -> int:
        return self.classes.index(label)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def usable(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    def quarantined(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    def split_records(self, split: str) -> list[Record]:
        """The usable records of one split, in manifest order (the order evaluation datasets yield them)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return [r for r in self.records if r.ok and r.split == split]

    def split_labels(self, split: str) -> list[int]:
        """Label indices of `split_records(split)`, in the same order (single-label data; see `split_targets`)."""
        if self.multi_label:
            raise ValueError("a multi-label manifest has label sets, not one label per image; use split_targets")
        index = {name: i for i, name in enumerate(self.classes)}
        return [index[r.label] for r in self.split_records(split)]

    def split_targets(self, split: str):
        """Targets of `split_records(split)` as float32 (N, C): multi-hot rows (multi-label) or one-hot rows."""
        import numpy as np

        index = {name: i for i, name in enumerate(self.classes)}
        records = self.split_records(split)
        targets = np.zeros((len(records), self.num_classes), np.float32)
        for row, r in enumerate(records):
            for label in record_labels(r):
                targets[row, index[label]] = 1.0
        return targets

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Usable images per class (all splits, or one), in class order; multi-label: images carrying each label."""
        counts = collections.Counter(
            label for r in self.usable() if split is None or r.split == split for label in record_labels(r)
        )
        return {name: counts.get(name, 0) for name in self.classes}

    def empty_label_sets(self, split: str | None = None) -> int:
        """Usable images with no label (multi-label data; always 0 for single-label)."""
        return sum(1 for r in self.usable() if r.labels == () and (split is None or r.split == split))

    def split_sizes(self) -> dict[str, int]:
        counts = collections.Counter(r.split for r in self.usable())
        return {split: counts.get(split, 0) for split in SPLITS}

    def display_path(self, record: Record) -> str:
        """A record's path as the user knows it: relative to the dataset (inside the archive for zips)."""
        if self.root:
            try:
                return Path(record.path).relative_to(self.root).as_posix()
            except ValueError:
                pass
        return record.path

    # ----------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        """What ingest found, as plain JSON-ready data (the CLI's `inspect` and the app show it)."""
        per_class = {name: {split: 0 for split in SPLITS} | {"total": 0} for name in self.classes}
        for r in self.usable():
            for label in record_labels(r):
                per_class[label][r.split] += 1
                per_class[label]["total"] += 1
        formats = collections.Counter(r.format for r in self.usable())
        multi = {"multi_label": True, "empty_label_sets": self.empty_label_sets()} if self.multi_label else {}
        return multi | {
            "source": self.source,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "num_files": len(self.records),
            "num_images": len(self.usable()),
            "counts": per_class,
            "split_sizes": self.split_sizes(),
            "user_splits": self.user_splits,
            "formats": dict(sorted(formats.items())),
            "converted": sum(1 for r in self.usable() if r.decode_path and r.decode_path != r.path),
            "quarantined": [
                {"file": self.display_path(r), "path": r.path, "label": r.label, "reason": r.reason}
                for r in self.quarantined()
            ],
            "warnings": list(self.warnings),
            "grouping": self.grouping,
            "groups": len({r.group for r in self.usable() if r.group}),
            "dataset_version": self.dataset_version,
        }

    def format_report(self) -> str:
        """The report as text for a terminal."""
        rep = self.report()
        lines = [f"source: {rep['source']}"]
        sizes = rep["split_sizes"]
        origin = "as given by the data" if rep["user_splits"] else f"stratified, seed {self.seed}"
        if self.multi_label:
            origin = f"iterative stratification, seed {self.seed}"
        kind = "labels (multi-label)" if self.multi_label else "classes"
        lines.append(
            f"{rep['num_images']} usable images in {rep['num_classes']} {kind} "
            f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; splits {origin})"
        )
        if self.multi_label:
            lines.append(f"{rep['empty_label_sets']} image(s) with no label")
        width = max(len(c) for c in self.classes) if self.classes else 5
        lines.append(f"  {'class':<{width}}  {'train':>6} {'val':>6} {'test':>6} {'total':>6}")
        for name, c in rep["counts"].items():
            lines.append(f"  {name:<{width}}  {c['train']:>6} {c['val']:>6} {c['test']:>6} {c['total']:>6}")
        if rep["grouping"]:
            lines.append(f"{rep['groups']} group(s) kept on one side of the split (from {rep['grouping']})")
        if rep["dataset_version"]:
            v = rep["dataset_version"]
            lines.append(
                f"dataset version {v['id']} (made {v['created']} by `workbench audit --apply` from {v['parent']})"
            )
        if rep["converted"]:
            lines.append(
                f"{rep['converted']} image(s) converted once to clean 8-bit RGB copies "
                "(CMYK, 16-bit, alpha, palette, animated, EXIF-rotated or non-JPEG/PNG)"
            )
        if rep["quarantined"]:
            lines.append(f"quarantined {len(rep['quarantined'])} file(s):")
            lines.extend(f"  {q['file']}: {q['reason']}" for q in rep["quarantined"])
        else:
            lines.append("quarantined: none")
        for warning in rep["warnings"]:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)

    # ----------------------------------------------------------------- JSON
    def to_dict(self, base: str | os.PathLike | None = None) -> dict[str, Any]:
        """Plain JSON data; with `base` (the folder of the file it goes to), paths inside it become relative."""
        folder = os.path.abspath(base) if base is not None else None
        records = []
        for r in self.records:
            record = dataclasses.asdict(r)
            if record["labels"] is None:  # single-label manifests stay as they were
                del record["labels"]
            else:
                record["labels"] = list(record["labels"])
            for name in _PATH_FIELDS:
                record[name] = _store(record[name], folder)
            records.append(record)
        data = {
            "version": MANIFEST_VERSION,
            "source": self.source,
            "classes": list(self.classes),
            "seed": self.seed,
            "user_splits": self.user_splits,
            "root": _store(self.root, folder),
            "warnings": list(self.warnings),
            "grouping": self.grouping,
            "dataset_version": self.dataset_version,
            "records": records,
        }
        if folder is not None:
            data["paths"] = _RELATIVE_TO_MANIFEST
        if self.multi_label:
            data["multi_label"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: str | os.PathLike | None = None) -> Manifest:
        """The inverse of `to_dict`; `base` is the folder the data was read from."""
        if data.get("version") != MANIFEST_VERSION:
            raise DataError(
                f"manifest version {data.get('version')!r} is not supported (expected {MANIFEST_VERSION}); "
                "run the ingest again to rebuild it"
            )
        # Old manifests (no "paths" key) hold paths relative to the working directory of their ingest.
        folder = os.path.abspath(base) if base is not None and data.get("paths") == _RELATIVE_TO_MANIFEST else ""
        fields = {f.name for f in dataclasses.fields(Record)}
        records = []
        for r in data["records"]:
            values = {k: v for k, v in r.items() if k in fields}
            if values.get("labels") is not None:
                values["labels"] = tuple(values["labels"])
            for name in _PATH_FIELDS:
                if folder and name in values:
                    values[name] = _resolve(values[name], folder)
            records.append(Record(**values))
        root = str(data.get("root", ""))
        return cls(
            source=data["source"],
            classes=list(data["classes"]),
            records=records,
            warnings=list(data.get("warnings", [])),
            seed=int(data.get("seed", 0)),
            user_splits=bool(data.get("user_splits", False)),
            root=_resolve(root, folder) if folder else root,
            grouping=str(data.get("grouping", "")),
            dataset_version=data.get("dataset_version"),
            multi_label=bool(data.get("multi_label", False)),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest as JSON atomically, with paths that resolve from any working directory."""
        path = Path(path)
        text = json.dumps(self.to_dict(base=os.path.dirname(os.path.abspath(path))), ensure_ascii=False, indent=1)
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"manifest {path} does not exist; run the ingest first") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"manifest {path} is not valid JSON ({exc}); run the ingest again") from None
        return cls.from_dict(data, base=os.path.dirname(os.path.abspath(path)))
