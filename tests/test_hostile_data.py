"""Hostile data: what ingest and the tf.data input do with data built to hurt them.

This file is the data side's security specification. Each test is one rule, built from a reproduction in the
hardening report of 2026-11-28 (issue 11); the finding id is in the comment above it. The rules:

* archives cannot fill the disk: the compression ratio is capped per member and for the whole archive (A6);
* a FIFO or device file never blocks or is opened: only regular files are read (A8);
* a manifest works from any working directory, and in a moved run folder (B1);
* a class name that labels.txt cannot hold as is, with a line break or control character (C1) or white space at
  an end (C2), is refused at ingest with a message naming the folder;
* split folders stay splits when a stray folder sits next to them (C3); splits or classes that differ only in
  letter case are an error or a warning (C3, D);
* a file Pillow accepts but TensorFlow's decoder refuses is quarantined at ingest, and a file that fails later is
  named by the error (C5);
* broken archives (a file and a folder of one name, names too long) and a run folder given to `inspect` are
  clear errors, never a traceback (D).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import DataError, Manifest, ingest, sources
from pipelines.images import PILLOW_MAX_PIXELS, check_image
from workbench.cli import main

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers
def jpeg_bytes(value: int = 90, size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def mkdata(root: Path, per: int, names: list[str]) -> Path:
    """The report's mkdata.py: `per` 40x40 JPEGs per class, class k tinted in channel k % 3."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per):
            pixels = rng.uniform(0, 80, (40, 40, 3))
            pixels[..., k % 3] += 150
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def good_rows(size: int = 40) -> bytes:
    """Raw scan lines (filter 0) of a mkdata-style image: noise that deflates with Huffman codes, like photos.

    (Random bytes would be stored uncompressed; Pillow's decoder then meets the zlib checksum and fails too.)
    """
    pixels = np.random.default_rng(0).uniform(0, 80, (size, size, 3))
    pixels[..., 0] += 150
    pixels = pixels.astype(np.uint8)
    return b"".join(b"\x00" + pixels[y].tobytes() for y in range(size))


def png_with(rows: bytes | None = None, idat: bytes | None = None, size: int = 40) -> bytes:
    """A size x size 8-bit RGB PNG from raw scan lines (or an IDAT payload), every chunk CRC correct."""
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    payload = zlib.compress(good_rows(size) if rows is None else rows) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", payload) + png_chunk(b"IEND", b"")


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------ A6: archives cannot fill the disk
# A6: `archives.py` checked the ratio only for members over 1 MiB, so members of exactly 1 MiB of zeros passed.
def test_zip_member_of_exactly_one_mib_of_zeros_is_refused_as_a_bomb(tmp_path):
    archive = tmp_path / "z_manysmall.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for c in "ab":
            z.writestr(f"ds/{c}/ok.jpg", jpeg_bytes())
            for i in range(3):
                z.writestr(f"ds/{c}/pad{i:03d}.jpg", b"\0" * (1 << 20))
    with pytest.raises(DataError, match=r"'ds/a/pad000.jpg' expands 1,0\d\dx .*compression-ratio limit of 100x"):
        ingest(archive, tmp_path / "work")
    assert files_under(tmp_path / "work") == []


# A6: many members, each too small for the per-member check, add up (a 230 KB zip became 201 MB on disk).
def test_zip_of_many_small_compressible_members_is_refused_by_the_archive_ratio(tmp_path):
    archive = tmp_path / "z_total.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for c in "ab":
            z.writestr(f"ds/{c}/ok.jpg", jpeg_bytes())
            for i in range(100):
                z.writestr(f"ds/{c}/pad{i:03d}.jpg", b"\0" * (60 << 10))  # under the per-member floor
    with pytest.raises(DataError, match=r"z_total.zip expands \d+x in all .*limit of 100x.*convert them to JPEG"):
        ingest(archive, tmp_path / "work")
    assert files_under(tmp_path / "work") == []


# ------------------------------------------------------------------ A8: only regular files are read
# A8: a FIFO in a class folder blocked `inspect` forever (Pillow opened it and waited for a writer).
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_in_a_class_folder_is_skipped_without_being_opened(tmp_path):
    data = mkdata(tmp_path / "dfifo", 4, ["a", "b"])
    fifo = data / "a" / "pipe.jpg"
    os.mkfifo(fifo)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(m=ingest(data, tmp_path / "work")), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader, so that the test fails instead of hanging
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("ingest blocked on a FIFO")
    manifest = result["m"]
    assert len(manifest.records) == 8 and not manifest.quarantined()
    assert any("1 special file(s)" in w and "a/pipe.jpg" in w for w in manifest.warnings)
    # The check itself refuses it too (the walk and the open could race with a swap of the file).
    check = check_image(fifo, max_pixels=PILLOW_MAX_PIXELS, normalised_dir=tmp_path / "n")
    assert not check.ok and "FIFO" in check.reason


# ------------------------------------------------------------------ B1: manifests resolve from anywhere
# B1: the manifest held paths as typed (`data1/blue/000.jpg`), so `evaluate` from another directory failed.
def test_manifest_paths_resolve_from_another_working_directory(tmp_path, monkeypatch):
    mkdata(tmp_path / "scratch" / "data1", 3, ["blue", "green"])
    monkeypatch.chdir(tmp_path / "scratch")
    ingest("data1", "runs/r1")  # relative data and work directory, as the CLI's defaults give them
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    manifest = Manifest.load(tmp_path / "scratch" / "runs" / "r1" / "manifest.json")
    assert len(manifest.records) == 6
    for record in manifest.records:
        assert Path(record.path).is_absolute() and Path(record.source_path).read_bytes()
    assert Path(manifest.root).is_absolute()


# B1: a zip's files live inside the run folder; stored relative to the manifest, they move with the run.
def test_a_moved_run_folder_keeps_its_extracted_files(tmp_path):
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for c, value in (("cats", 40), ("dogs", 200)):
            for i in range(3):
                z.writestr(f"{c}/{i}.jpg", jpeg_bytes(value + i))
    ingest(archive, tmp_path / "runs" / "r1")
    stored = json.loads((tmp_path / "runs" / "r1" / "manifest.json").read_text())
    assert not Path(stored["records"][0]["path"]).is_absolute()  # relative to the manifest's folder
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    manifest = Manifest.load(tmp_path / "moved" / "r1" / "manifest.json")
    assert all(
        Path(r.path).is_relative_to(tmp_path / "moved" / "r1") and Path(r.path).exists() for r in manifest.records
    )
    assert manifest.display_path(manifest.records[0]) == "cats/0.jpg"


# B1: manifests written before the fix (no "paths" key) are read exactly as before.
def test_manifest_written_before_the_fix_is_read_as_before(tmp_path):
    manifest = ingest(mkdata(tmp_path / "d", 3, ["a", "b"]), tmp_path / "w")
    old = manifest.to_dict()  # no folder given: paths as in memory, and no "paths" key, like old files
    assert "paths" not in old
    old["records"][0]["path"] = "data1/a/000.jpg"
    (tmp_path / "w" / "old.json").write_text(json.dumps(old))
    assert Manifest.load(tmp_path / "w" / "old.json").records[0].path == "data1/a/000.jpg"


# ------------------------------------------------------------------ C1, C2: class names labels.txt can hold
LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\n", "\r"]


# C1: `labels.txt` is read back with str.splitlines(), so "a\u2028b" became two labels and the run was unusable.
@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_class_folder_with_a_line_break_in_its_name_is_refused(tmp_path, char):
    data = mkdata(tmp_path / "data_ls", 3, [f"a{char}b", "plain"])
    with pytest.raises(DataError) as caught:
        ingest(data, tmp_path / "work")
    message = str(caught.value)
    assert f"class folder in {data}" in message and repr(f"a{char}b") in message
    assert f"U+{ord(char):04X}" in message and "rename it" in message
    assert not (tmp_path / "work" / "manifest.json").exists()


# C1: every character str.splitlines() splits on is refused, wherever the class name comes from.
def test_every_character_splitlines_splits_on_is_refused_in_class_names():
    splitters = [chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) > 1]
    assert set(LINE_BREAKS) <= set(splitters)
    for char in splitters:
        with pytest.raises(DataError, match=f"U\\+{ord(char):04X}"):
            sources.check_class_name(f"x{char}y", "in-memory class_names[0]")
    assert sources.check_class_name("Zoo lion", "here") == "Zoo lion"  # inner spaces and Unicode stay allowed
    assert sources.check_class_name("日本の猫", "here") == "日本の猫"


# C2: model files strip each label line, the manifest kept "cat ": evaluation crashed (KeyError), exports differed.
@pytest.mark.parametrize("name", ["cat ", " cat", "cat\u00a0"])
def test_class_folder_with_white_space_at_an_end_is_refused(tmp_path, name):
    data = mkdata(tmp_path / "data_ws", 3, [name, "dog", "Zoo lion"])
    with pytest.raises(DataError, match=r"starts or ends with white space.*rename it to 'cat'") as caught:
        ingest(data, tmp_path / "work")
    assert f"class folder in {data}" in str(caught.value) and repr(name) in str(caught.value)


# C1, C2: in-memory class names follow the same rule.
def test_in_memory_class_names_labels_txt_cannot_hold_are_refused(tmp_path):
    images, labels = np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match=r"class_names\[1\].*U\+2028"):
        ingest((images, labels, ["a", "b\u2028c"]), tmp_path / "w1")
    with pytest.raises(DataError, match=r"class_names\[0\].*white space"):
        ingest((images, labels, ["a ", "b"]), tmp_path / "w2")


# ------------------------------------------------------------------ C3: split folders stay splits
# C3: `unlabeled/` next to train/ and test/ turned the splits into classes "test", "train", "unlabeled".
def test_stray_folder_next_to_split_folders_is_ignored_with_a_warning(tmp_path):
    root = tmp_path / "split4"
    mkdata(root / "train", 6, ["cat", "dog"])
    mkdata(root / "test", 3, ["cat", "dog"])
    mkdata(root / "unlabeled", 2, ["misc"])
    manifest = ingest(root, tmp_path / "work")
    assert manifest.classes == ["cat", "dog"] and manifest.user_splits
    assert manifest.split_sizes()["test"] == 6 and manifest.class_counts() == {"cat": 9, "dog": 9}
    assert any("unlabeled" in w and "ignored" in w and "test, train" in w for w in manifest.warnings)


# C3: `train/` next to `Train/` became two classes, "Train" and "train".
def test_split_folders_differing_only_in_case_are_refused(tmp_path):
    root = tmp_path / "splitcase"
    mkdata(root / "train", 4, ["cat", "dog"])
    mkdata(root / "Train", 2, ["cat", "dog"])
    with pytest.raises(DataError, match=r"the folders Train, train all hold the train split.*merge them"):
        ingest(root, tmp_path / "work")


# C3, D: `Cat/` and `cat/` are two classes on Linux, and one folder (an error) on macOS and Windows.
def test_class_folders_differing_only_in_case_give_a_warning(tmp_path):
    archive = tmp_path / "z_case.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for c in ("Cat", "cat", "dog"):
            for i in range(3):
                z.writestr(f"{c}/{i}.jpg", jpeg_bytes(40 * len(c) + i))
    manifest = ingest(archive, tmp_path / "work")
    assert manifest.classes == ["Cat", "cat", "dog"]
    assert any("'Cat' and 'cat' differ only in case" in w and "case-insensitive" in w for w in manifest.warnings)


# ------------------------------------------------------------------ C5: what TensorFlow cannot decode
def bad_adler_png() -> bytes:
    """The report's bad_adler.png: the last 4 IDAT bytes (the zlib Adler-32) inverted, the IDAT CRC recomputed."""
    compressed = zlib.compress(good_rows())
    return png_with(idat=compressed[:-4] + bytes(b ^ 0xFF for b in compressed[-4:]))


def jpeg_without_end_marker() -> bytes:
    """A JPEG whose scan data stops half-way at a stray RST marker, with no end-of-image marker after it.

    libjpeg pads the missing rows for Pillow, which then has its pixels; TensorFlow's libjpeg reads on for the
    end-of-image marker and fails ("Input file read error").
    """
    buf = io.BytesIO()
    Image.frombytes("RGB", (40, 40), good_rows()[: 40 * 40 * 3]).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    scan = data.find(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    return data[: (start + len(data)) // 2] + b"\xff\xd0"


def damaged_rgba_png() -> bytes:
    """An RGBA PNG (converted at ingest, not read in place) whose IDAT lost its last scan lines."""
    pixels = np.random.default_rng(0).uniform(0, 80, (40, 40, 4)).astype(np.uint8)
    pixels[..., 3] = 255
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(36))
    header = struct.pack(">IIBBBBB", 40, 40, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


LENIENT_PILLOW = {
    "bad_adler.png": bad_adler_png,
    "damaged_rgba.png": damaged_rgba_png,
    "bad_zlib_header.png": lambda: png_with(idat=b"\x78\x00" + zlib.compress(good_rows())[2:]),
    "missing_scan_line.png": lambda: png_with(rows=good_rows()[: -(1 + 40 * 3)]),
    "bad_filter_type.png": lambda: png_with(rows=good_rows()[:605] + b"\x07" + good_rows()[606:]),
    "no_end_marker.jpg": jpeg_without_end_marker,
}


# C5: the Pillow check passed each of these ("quarantined: none"; the RGBA one became a normalised copy with
# black rows), and TensorFlow refused them: training crashed. Pillow stops once it has the pixels it wants, fills
# missing scan lines, and a PNG decode error was swallowed while EXIF was read.
@pytest.mark.parametrize("name", sorted(LENIENT_PILLOW))
def test_file_pillow_accepts_but_tensorflow_refuses_is_quarantined(tmp_path, name):
    import tensorflow as tf

    data = mkdata(tmp_path / "dadler3", 4, ["blue", "green", "red"])
    raw = LENIENT_PILLOW[name]()
    decode = tf.io.decode_png if name.endswith(".png") else tf.io.decode_jpeg
    with pytest.raises(tf.errors.InvalidArgumentError):  # why it must be quarantined: TensorFlow refuses it
        decode(raw, channels=3)
    (data / "red" / name).write_bytes(raw)
    manifest = ingest(data, tmp_path / "work")
    (record,) = manifest.quarantined()
    assert record.path.endswith(name) and "corrupt" in record.reason and "TensorFlow cannot decode" in record.reason


# C5: the checks are made without TensorFlow, so ingest (inspect, the app's data page) stays light.
def test_ingest_checks_files_without_importing_tensorflow(tmp_path):
    data = mkdata(tmp_path / "d", 3, ["a", "b"])
    (data / "a" / "bad.png").write_bytes(bad_adler_png())
    code = (
        "import sys, pipelines; m = pipelines.ingest(sys.argv[1], sys.argv[2]); "
        "assert len(m.quarantined()) == 1, m.quarantined(); assert 'tensorflow' not in sys.modules"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "w")], check=True, env=env, cwd=ROOT)


# C5: a file TensorFlow cannot decode (changed since the ingest) stopped evaluation with an error naming no file.
def test_evaluation_dataset_names_the_file_tensorflow_cannot_decode(tmp_path):
    from pipelines import make_datasets

    manifest = ingest(mkdata(tmp_path / "d", 6, ["a", "b", "c"]), tmp_path / "w", test_fraction=0.5)
    victim = manifest.split_records("test")[-1]  # the last one: no later element reveals the gap
    Path(victim.path).write_bytes(bad_adler_png())
    with pytest.raises(Exception, match="TensorFlow cannot read or decode the image file") as caught:
        for _ in make_datasets(manifest, image_size=8, batch_size=4, cache="none").test:
            pass
    assert victim.path in str(caught.value)


# ------------------------------------------------------------------ D: broken archives and runs, clear errors
# D: a zip with a file `ds/a` and a folder `ds/a/` gave a FileExistsError traceback.
@pytest.mark.parametrize("file_first", [True, False])
def test_zip_with_a_file_and_a_folder_of_one_name_is_a_clear_error(tmp_path, file_first):
    members = [f"ds/{c}/{i}.jpg" for c in "ab" for i in range(3)]
    members = ["ds/a", *members] if file_first else [*members, "ds/a"]
    archive = tmp_path / "z_filedir.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in members:
            z.writestr(name, jpeg_bytes())
    with pytest.raises(DataError, match=r"'ds/a'.*both a file and a folder; rename one"):
        ingest(archive, tmp_path / "work")
    assert files_under(tmp_path / "work") == []


# D: a member name over 255 bytes, or a path over 4096 bytes, gave an OSError (ENAMETOOLONG) traceback.
@pytest.mark.parametrize(
    "long_name",
    ["a/" + "x" * 300 + ".jpg", "a/" + "/".join(["d" * 200] * 22) + "/x.jpg"],
    ids=["part over 255 bytes", "path over 4096 bytes"],
)
def test_zip_member_name_too_long_for_the_file_system_is_a_clear_error(tmp_path, long_name, capsys):
    archive = tmp_path / "z_long.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in [f"{c}/{i}.jpg" for c in "ab" for i in range(3)] + [long_name]:
            z.writestr(name, jpeg_bytes())
    assert main(["inspect", str(archive)]) == 2
    err = capsys.readouterr().err
    assert "name too long for the file system" in err and "shorten" in err and "Traceback" not in err


# D: `workbench inspect DATA --workdir runs/<id>` silently replaced that run's manifest.json.
def test_inspect_refuses_a_workdir_that_holds_a_run(tmp_path, capsys):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: x\n")
    (run / "manifest.json").write_text('{"the": "run manifest"}')
    data = mkdata(tmp_path / "d", 3, ["a", "b"])
    assert main(["inspect", str(data), "--workdir", str(run)]) == 2
    assert "holds a run" in capsys.readouterr().err
    assert (run / "manifest.json").read_text() == '{"the": "run manifest"}'
