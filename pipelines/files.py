"""Atomic file and directory writes: the one helper every writer in the project uses.

A reader (a Streamlit page, TF Serving polling a base path, a resumed run) sees the old file or the new
one, never half of one. Three details matter and are easy to get wrong by hand:

* temporary names come from `mkstemp`/`mkdtemp`, never from the pid: the app's sessions are threads of one
  process, and two of them writing the same report collided with pid-based names;
* `mkstemp` creates files 0600 and `mkdtemp` directories 0700; the result is chmod-ed to what a plain
  `open()` / `mkdir()` would give under the current umask, so TF Serving under another user can read an
  export and teammates can read a run;
* a temporary is removed when the write fails, and its name starts with a dot so listings skip it
  (`remove_stale_temporaries` clears those a SIGKILL left behind).

This module lives in `pipelines`, the lowest layer, because both the data side (manifests, normalised
copies) and `workbench` (runs, exports, model cards) write files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once. (Linux >= 4.7 also has
    # /proc/self/status, but this works everywhere.)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode `open()` (0666) or `mkdir()` (0777) would create under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path` in one step.

    The temporary keeps the final suffix by default (Keras and TFLite pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or "".join(path.suffixes))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically. Newlines are written as given (no platform translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write JSON atomically; non-ASCII text (class names) stays readable."""
    return atomic_write_text(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden staging directory beside `target`; on success it becomes `target` in one rename.

    `target` must not exist: directories that others poll (SavedModel versions) are immutable, so a
    rename never replaces one. Raises FileExistsError when `target` appears meanwhile.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        for root, dirs, files in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(root, name), default_mode(directory=True))
            for name in files:
                os.chmod(os.path.join(root, name), default_mode())
        os.chmod(staging, default_mode(directory=True))
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the dot-named temporaries and staging directories a killed writer left in `directory`.

    Call it only where no other writer is active (a run being resumed holds its lock).
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if not entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
