"""Safe extraction of zip archives (the Streamlit app's uploads).

Every member is checked before anything is written: no member may land outside the extraction directory
(`..` components, absolute paths, drive letters and symlinks are refused), no two members may claim one path
(twice the same name, or a file where others need a folder), names must fit the file system, and the member
count, the total uncompressed size and the compression ratio are capped. The ratio is capped per member and for
the archive as a whole, against the archive's real size: 200 members of 1 MiB of zeros each stayed under a
per-member check that started at 1 MiB, and a 230 KB upload became 201 MB on disk (hardening report, A6).
Sizes are counted again while extracting, because the sizes in a zip's directory are only claims. Extraction
goes into a fresh directory that is removed when anything fails, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
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
# POSIX limits of Linux and macOS: bytes per path component, and per path.
_NAME_MAX = 255
_PATH_MAX = 4096


@dataclasses.dataclass(frozen=True)
class ZipLimits:
    """Caps for one archive. The defaults fit tens of thousands of photos and refuse zip bombs."""

    max_members: int = 100_000
    max_total_bytes: int = 8 * 1024**3  # uncompressed, all members together
    max_ratio: float = 100.0  # uncompressed / compressed, per member and for the archive (images barely compress)
    # Members, and archives, that expand to at most this many bytes are not ratio-checked: tiny files compress
    # well legitimately (a flat-colour BMP, a README) and cannot fill a disk.
    ratio_floor_bytes: int = 64 * 1024


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
    longest = max((len(os.fsencode(p)) for p in parts), default=0)
    if longest > _NAME_MAX or len(os.fsencode("/".join(parts))) > _PATH_MAX - _NAME_MAX:
        raise DataError(
            f"{archive}: member {name[:80]!r}... has a name too long for the file system (longest part {longest} "
            f"bytes, {len(os.fsencode(name)):,} bytes in all; the limits are {_NAME_MAX} per part and "
            f"{_PATH_MAX - _NAME_MAX:,} in all); shorten the file and folder names and re-create the archive"
        )
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
    claimed: dict[tuple[str, ...], tuple[str, str]] = {}  # path the plan writes -> ("file" | "folder", member)
    for info in infos:
        name = _member_name(info)
        parts = _safe_parts(archive, name, info)
        if not parts or info.is_dir() or is_ignored(parts):
            continue
        if info.flag_bits & 0x1:
            raise DataError(f"{archive}: member {name!r} is encrypted; upload an archive without a password")
        _claim(archive, name, parts, claimed)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DataError(
                f"{archive} expands to more than {limits.max_total_bytes:,} bytes (the limit); "
                "upload a smaller archive or raise ZipLimits.max_total_bytes"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
            raise DataError(
                f"{archive}: member {name!r} expands {ratio:,.0f}x ({info.compress_size:,} → "
                f"{info.file_size:,} bytes), over the compression-ratio limit of "
                f"{limits.max_ratio:g}x (possible zip bomb); refused"
            )
        plan.append((info, parts))
    # The whole archive against its size on disk, which, unlike the directory's sizes, cannot lie: many small
    # members under the floor add up too. Extraction never writes more than the declared sizes.
    size = archive.stat().st_size
    if total > limits.ratio_floor_bytes and total / max(size, 1) > limits.max_ratio:
        raise DataError(
            f"{archive} expands {total / max(size, 1):,.0f}x in all ({size:,} → {total:,} bytes), over the "
            f"compression-ratio limit of {limits.max_ratio:g}x (possible zip bomb); refused. Photos barely "
            "compress; if these are real images, convert them to JPEG or PNG first"
        )
    return plan


def _claim(archive: Path, name: str, parts: tuple[str, ...], claimed: dict[tuple[str, ...], tuple[str, str]]) -> None:
    """Record that member `name` writes the file `parts` and needs its folders; DataError on a clash."""
    folders = [parts[:i] for i in range(1, len(parts))]
    if parts in claimed and claimed[parts][0] == "file":
        raise DataError(f"{archive}: member {name!r} appears twice; re-create the archive")
    # A folder some other member needs at this path, or a file where this member needs a folder.
    other = claimed.get(parts) or next((claimed[f] for f in folders if claimed.get(f, ("",))[0] == "file"), None)
    if other is not None:
        raise DataError(
            f"{archive}: members {name!r} and {other[1]!r} need one path as both a file and a folder; rename "
            "one of them and re-create the archive"
        )
    claimed[parts] = ("file", name)
    for folder in folders:
        claimed.setdefault(folder, ("folder", name))


def _extract(archive: Path, zf: zipfile.ZipFile, plan, dest: Path, limits: ZipLimits) -> None:
    root = dest.resolve()
    written = 0
    for info, parts in plan:
        target = root.joinpath(*parts)
        # Belt and braces: the components were checked above; this also catches odd platform semantics.
        if os.path.commonpath([root, target.resolve()]) != str(root):
            raise DataError(f"{archive}: member {info.filename!r} would land outside the extraction directory")
        member_bytes = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
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
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise DataError(
                f"{archive}: member {info.filename!r} cannot be extracted ({exc}); "
                "the archive is damaged or uses an unsupported compression"
            ) from None
        except OSError as exc:
            raise DataError(_write_error(archive, info.filename, exc)) from None


def _write_error(archive: Path, name: str, exc: OSError) -> str:
    """The message for a member the file system refused, although the plan found no clash."""
    if isinstance(exc, FileExistsError):  # e.g. two names that differ in case only, on macOS or Windows
        return (
            f"{archive}: member {name!r} appears twice on this file system (perhaps in another letter case); "
            "rename one and re-create the archive"
        )
    if isinstance(exc, (NotADirectoryError, IsADirectoryError)):
        return f"{archive}: member {name!r} needs a path that is both a file and a folder; re-create the archive"
    if exc.errno == errno.ENAMETOOLONG:
        return f"{archive}: member {name[:80]!r}... has a name too long for this file system; shorten it"
    if exc.errno == errno.ENOSPC:
        return f"{archive}: member {name!r} cannot be written: the disk is full; free some space and try again"
    return f"{archive}: member {name!r} cannot be written ({exc.strerror or exc}); check the extraction folder"
