"""Zip uploads: members never land outside the extraction directory, caps hold, failures leave nothing behind."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import DataError, ZipLimits, ingest
from pipelines.archives import extract_zip


def png_bytes(value: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def good_members(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i}.png": png_bytes(60 * k + i) for k, c in enumerate(("cats", "dogs")) for i in range(4)}


def write_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_zip_of_class_folders_with_wrapping_folder_and_macos_junk(tmp_path):
    members = good_members("flowers/") | {
        "__MACOSX/flowers/cats/._0.png": b"\x00\x05\x16\x07junk",
        "flowers/.DS_Store": b"Bud1",
        "flowers/cats/.DS_Store": b"Bud1",
    }
    archive = write_zip(tmp_path / "flowers.zip", members)
    manifest = ingest(archive, tmp_path / "work")
    assert manifest.classes == ["cats", "dogs"]
    assert len(manifest.records) == 8 and not manifest.quarantined()
    assert manifest.source == str(archive)
    assert manifest.display_path(manifest.records[0]) == "flowers/cats/0.png"  # as inside the archive
    assert all(Path(r.path).is_relative_to(tmp_path / "work" / "data" / "extracted") for r in manifest.records)


def test_split_is_the_same_for_every_extraction(tmp_path):
    archive = write_zip(tmp_path / "d.zip", good_members())
    first = ingest(archive, tmp_path / "w1")
    second = ingest(archive, tmp_path / "w2")  # a different, fresh extraction directory
    assert [r.split for r in first.records] == [r.split for r in second.records]


@pytest.mark.parametrize(
    "bad_name, expected",
    [
        ("../evil.png", r"outside the archive \('\.\.'\)"),
        ("cats/../../evil.png", r"outside the archive"),
        ("/etc/evil.png", "absolute path"),
        ("C:/evil.png", "absolute path"),
        ("..\\evil.png", "outside the archive"),
    ],
)
def test_members_escaping_the_extraction_dir_are_refused(tmp_path, bad_name, expected):
    archive = write_zip(tmp_path / "evil.zip", good_members() | {bad_name: png_bytes(1)})
    with pytest.raises(DataError, match=expected):
        ingest(archive, tmp_path / "work")
    assert not (tmp_path / "evil.png").exists()
    assert not [p for p in leftovers(tmp_path / "work") if p.is_file()]


def test_symlink_member_is_refused(tmp_path):
    archive = write_zip(tmp_path / "link.zip", good_members(), symlinks={"cats/passwd.png": "/etc/passwd"})
    with pytest.raises(DataError, match=r"'cats/passwd.png' is a symbolic link"):
        ingest(archive, tmp_path / "work")
    assert not [p for p in leftovers(tmp_path / "work") if p.is_file() or p.is_symlink()]


def test_archive_over_the_size_cap_is_refused_with_the_limit(tmp_path):
    archive = write_zip(tmp_path / "big.zip", good_members())
    with pytest.raises(DataError, match=r"more than 300 bytes \(the limit\)"):
        ingest(archive, tmp_path / "work", zip_limits=ZipLimits(max_total_bytes=300))
    assert leftovers(tmp_path / "work" / "data" / "extracted") == []


def test_archive_over_the_ratio_cap_is_refused_with_the_limit(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", good_members() | {"cats/zeros.png": b"\x00" * (4 << 20)})
    with pytest.raises(DataError, match=r"cats/zeros.png.*compression-ratio limit of 100x.*zip bomb"):
        ingest(archive, tmp_path / "work")
    assert leftovers(tmp_path / "work" / "data" / "extracted") == []


def test_archive_over_the_member_cap_is_refused_with_the_limit(tmp_path):
    archive = write_zip(tmp_path / "many.zip", good_members())
    with pytest.raises(DataError, match=r"8 members, over the limit of 5"):
        ingest(archive, tmp_path / "work", zip_limits=ZipLimits(max_members=5))


def test_member_lying_about_its_size_fails_and_leaves_nothing(tmp_path):
    archive = write_zip(tmp_path / "lie.zip", good_members())
    # Patch the central directory so one member claims to be 10 bytes long (it is a few hundred).
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[3]
    central = data.find(b"PK\x01\x02")
    header = data.find(info.filename.encode(), central) - 46  # the name follows a 46-byte fixed header
    assert data[header : header + 4] == b"PK\x01\x02"
    data[header + 24 : header + 28] = (10).to_bytes(4, "little")  # uncompressed size
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=info.filename):
        extract_zip(archive, tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


def test_not_a_zip_is_a_clear_error(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("hello")
    with pytest.raises(DataError, match="not a readable zip archive"):
        ingest(fake, tmp_path / "work")


def test_extraction_goes_into_a_fresh_directory(tmp_path):
    archive = write_zip(tmp_path / "d.zip", good_members())
    first = extract_zip(archive, tmp_path / "out")
    second = extract_zip(archive, tmp_path / "out")
    assert first != second and first.parent == second.parent == tmp_path / "out"
    assert sorted(p.name for p in first.iterdir()) == ["cats", "dogs"]
