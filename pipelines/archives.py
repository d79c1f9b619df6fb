"""Safe extraction of zip archives (the Streamlit app's uploads).

Every member is checked before anything is written: no member may land outside the extraction directory
(`..` components, absolute paths, drive letters and symlinks are refused), and the member count, the total
uncompressed size and the compression ratio are capped. Sizes are counted again while extracting, because the
sizes in a zip's directory are only claims. Extraction goes into a fresh directory that is removed when anything
fails, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipelines.errors import DataError

# Files that operating systems add to archives and that are never data.
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
IGNORED_DIRS = frozenset({"__MACOSX"})
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ZipLimits:
    """Caps for one archive. The defaults fit tens of thousands of photos and refuse zip bombs."""

    max_members: int = 100_000
    max_total_bytes: int = 8 * 1024**3  # uncompressed, all members together
    max_ratio: float = 100.0  # uncompressed / compressed, per member (images barely compress)


def is_ignored(parts: tuple[str, ...]) -> bool:
    """True for macOS/Windows leftovers: `__MACOSX/...`, `.DS_Store`, AppleDouble `._x` files, Thumbs.db."""
    return any(p in IGNORED_DIRS for p in parts[:-1]) or parts[-1] in IGNORED_NAMES or parts[-1].startswith("._")


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name, decoded as UTF-8 when the archiver forgot to set the UTF-8 flag (common on Windows)."""
    name = info.filename
    if not info.flag_bits & 0x800:
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            name = name.encode("cp437").decode("utf-8")
    return name


def _safe_parts(archive: Path, name: str, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path components, or DataError when the member could land outside the extraction directory."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(
            f"{archive}: member {name!r} is a symbolic link; links are refused. "
            "Re-create the archive from the real files (e.g. `zip -r` without -y)."
        )
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise DataError(
            f"{archive}: member {name!r} has an absolute path; refused. "
            "Re-create the archive with paths relative to the dataset folder."
        )
    parts = tuple(p for p in PurePosixPath(normalised).parts if p not in ("", "."))
    if ".." in parts:
        raise DataError(
            f"{archive}: member {name!r} points outside the archive ('..'); refused. "
            "Re-create the archive with paths relative to the dataset folder."
        )
    if any("\x00" in p for p in parts):
        raise DataError(f"{archive}: member {name!r} has a NUL byte in its name; refused.")
    return parts


def extract_zip(archive: str | os.PathLike, parent: str | os.PathLike, limits: ZipLimits = ZipLimits()) -> Path:
    """Extract `archive` into a new directory under `parent` and return that directory.

    Raises DataError (and leaves no directory behind) when the archive is unreadable, unsafe or over a limit.
    """
    archive = Path(archive)
    parent = Path(parent)
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DataError(f"archive {archive} does not exist; check the path") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive} is not a readable zip archive ({exc}); re-create it with a zip tool") from None
    with zf:
        plan = _plan(archive, zf, limits)
        parent.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(prefix=f"{archive.stem[:40]}-", dir=parent))
        try:
            _extract(archive, zf, plan, dest, limits)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def _plan(archive: Path, zf: zipfile.ZipFile, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise DataError(
            f"{archive} has {len(infos):,} members, over the limit of {limits.max_members:,}; "
            "split it into smaller archives or raise ZipLimits.max_members"
        )
    plan, total = [], 0
    for info in infos:
        name = _member_name(info)
        parts = _safe_parts(archive, name, info)
        if not parts or info.is_dir() or is_ignored(parts):
            continue
        if info.flag_bits & 0x1:
            raise DataError(f"{archive}: member {name!r} is encrypted; upload an archive without a password")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DataError(
                f"{archive} expands to more than {limits.max_total_bytes:,} bytes (the limit); "
                "upload a smaller archive or raise ZipLimits.max_total_bytes"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _CHUNK and ratio > limits.max_ratio:
            raise DataError(
                f"{archive}: member {name!r} expands {ratio:,.0f}x ({info.compress_size:,} → "
                f"{info.file_size:,} bytes), over the compression-ratio limit of "
                f"{limits.max_ratio:g}x (possible zip bomb); refused"
            )
        plan.append((info, parts))
    return plan


def _extract(archive: Path, zf: zipfile.ZipFile, plan, dest: Path, limits: ZipLimits) -> None:
    root = dest.resolve()
    written = 0
    for info, parts in plan:
        target = root.joinpath(*parts)
        # Belt and braces: the components were checked above; this also catches odd platform semantics.
        if os.path.commonpath([root, target.resolve()]) != str(root):
            raise DataError(f"{archive}: member {info.filename!r} would land outside the extraction directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        member_bytes = 0
        try:
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_CHUNK):
                    member_bytes += len(chunk)
                    written += len(chunk)
                    if member_bytes > info.file_size or written > limits.max_total_bytes:
                        raise DataError(
                            f"{archive}: member {info.filename!r} expands beyond its declared size "
                            f"or the {limits.max_total_bytes:,}-byte limit; refused"
                        )
                    out.write(chunk)
        except FileExistsError:
            raise DataError(f"{archive}: member {info.filename!r} appears twice; re-create the archive") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise DataError(
                f"{archive}: member {info.filename!r} cannot be extracted ({exc}); "
                "the archive is damaged or uses an unsupported compression"
            ) from None
