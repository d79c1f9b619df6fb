"""Safe ingest: every file is checked once; bad files are quarantined with a reason, odd ones are normalised."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import DataError, IngestConfig, Manifest, ingest
from pipelines.images import PILLOW_MAX_PIXELS, check_image


def gradient(h: int = 40, w: int = 48) -> np.ndarray:
    """An RGB image whose colour tells position: red grows down, green grows right, blue constant."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y * 255 // max(h - 1, 1), x * 255 // max(w - 1, 1), np.full_like(y, 90)], -1).astype(np.uint8)


def save(path: Path, image: Image.Image | np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, format=fmt, **kw)
    return path


def make_classes(root: Path, counts: dict[str, int], size: int = 24) -> Path:
    """Class folders of small PNGs, each class a different flat colour."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            pixels = np.full((size, size, 3), (40 * k + 3 * i) % 256, np.uint8)
            save(root / name / f"img_{i:03d}.png", pixels)
    return root


def record_of(manifest: Manifest, name: str):
    (rec,) = [r for r in manifest.records if Path(r.path).name == name]
    return rec


def decoded(rec) -> np.ndarray:
    """The pixels tf.data will read for a record (its normalised copy if it has one)."""
    with Image.open(rec.source_path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def data(tmp_path):
    return make_classes(tmp_path / "data", {"cats": 6, "dogs": 6})


# ------------------------------------------------------------------ corrupt and lying files
def test_truncated_jpeg_is_quarantined_with_reason(data, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(gradient(200, 200)).save(buf, "JPEG", quality=90)
    (data / "cats" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    manifest = ingest(data, tmp_path / "work")
    rec = record_of(manifest, "truncated.jpg")
    assert rec.status == "quarantined" and rec.split is None
    assert "truncated" in rec.reason
    assert rec.path in [q["path"] for q in manifest.report()["quarantined"]]
    assert rec not in manifest.split_records("train") + manifest.split_records("val") + manifest.split_records("test")


def test_text_file_named_jpg_is_quarantined(data, tmp_path):
    (data / "dogs" / "notes.jpg").write_text("this is not an image\n")
    rec = record_of(ingest(data, tmp_path / "work"), "notes.jpg")
    assert rec.status == "quarantined"
    assert "not an image" in rec.reason


def test_png_that_is_really_a_jpeg_is_read_by_its_content(data, tmp_path):
    save(data / "cats" / "liar.png", gradient(30, 40), "JPEG", quality=95)
    rec = record_of(ingest(data, tmp_path / "work"), "liar.png")
    assert rec.ok and rec.format == "JPEG" and (rec.width, rec.height) == (40, 30)
    assert rec.decode_format == "JPEG"  # tf.data picks the decoder from the content, not the extension


def test_png_with_a_bad_checksum_is_quarantined(data, tmp_path):
    path = save(data / "cats" / "badcrc.png", gradient(30, 30))
    raw = bytearray(path.read_bytes())
    idat = raw.find(b"IDAT")
    length = int.from_bytes(raw[idat - 4 : idat], "big")
    raw[idat + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    path.write_bytes(bytes(raw))
    rec = record_of(ingest(data, tmp_path / "work"), "badcrc.png")
    assert rec.status == "quarantined" and rec.reason


def test_a_single_image_file_is_not_a_dataset(tmp_path):
    path = save(tmp_path / "cat.jpg", gradient(), "JPEG")
    with pytest.raises(DataError, match=r"cat.jpg is a single file; give a folder of class folders"):
        ingest(path, tmp_path / "work")


# ------------------------------------------------------------------ unusual but valid images
def test_cmyk_jpeg_is_converted_to_rgb(data, tmp_path):
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    save(data / "cats" / "cmyk.jpg", cmyk, "JPEG", quality=95)
    rec = record_of(ingest(data, tmp_path / "work"), "cmyk.jpg")
    assert rec.ok and rec.format == "JPEG"
    assert rec.decode_path != rec.path and rec.decode_format == "JPEG"
    r, g, b = decoded(rec)[16, 16].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_is_scaled_not_clipped(data, tmp_path):
    pixels = np.full((20, 20), 32768, np.uint16)  # mid grey in 16 bits; clipping would make it white
    save(data / "dogs" / "deep.png", Image.fromarray(pixels))
    assert Image.open(data / "dogs" / "deep.png").mode == "I;16"
    rec = record_of(ingest(data, tmp_path / "work"), "deep.png")
    assert rec.ok and rec.decode_path != rec.path
    assert 120 <= decoded(rec)[5, 5, 0] <= 135


def test_16_bit_rgb_png_is_normalised(data, tmp_path):
    path = data / "dogs" / "rgb48.png"
    _write_png_rgb16(path, np.full((8, 8, 3), [65535, 0, 32768], np.uint16))
    rec = record_of(ingest(data, tmp_path / "work"), "rgb48.png")
    assert rec.ok and rec.decode_path != rec.path  # TensorFlow would read it, but the copy makes it plain 8-bit
    r, g, b = decoded(rec)[4, 4].astype(int)
    assert r > 250 and g < 5 and 120 < b < 135


def test_rgba_png_transparent_pixels_become_white(data, tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, but...
    rgba[:8, :, 3] = 255  # ...only the top half is opaque
    save(data / "cats" / "alpha.png", Image.fromarray(rgba, "RGBA"))
    rec = record_of(ingest(data, tmp_path / "work"), "alpha.png")
    pixels = decoded(rec)
    assert rec.ok and pixels.shape == (16, 16, 3)
    assert tuple(pixels[2, 2]) == (255, 0, 0) and tuple(pixels[12, 2]) == (255, 255, 255)


def test_grayscale_and_palette_images_are_usable(data, tmp_path):
    save(data / "cats" / "gray.png", np.full((10, 12), 77, np.uint8))
    save(data / "cats" / "palette.png", Image.fromarray(gradient(10, 12)).convert("P"))
    save(data / "cats" / "gray.jpg", np.full((10, 12), 77, np.uint8), "JPEG")
    manifest = ingest(data, tmp_path / "work")
    gray = record_of(manifest, "gray.png")
    assert gray.ok and gray.decode_path == gray.path  # TF reads 8-bit gray PNG as is
    assert record_of(manifest, "gray.jpg").decode_path == str(data / "cats" / "gray.jpg")
    palette = record_of(manifest, "palette.png")
    assert palette.ok and palette.decode_path != palette.path and decoded(palette).shape == (10, 12, 3)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_uses_its_first_frame(data, tmp_path, fmt):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = data / "dogs" / f"anim.{fmt.lower()}"
    frames[0].save(
        path,
        format=fmt,
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        **({"lossless": True} if fmt == "WEBP" else {}),
    )
    rec = record_of(ingest(data, tmp_path / "work"), path.name)
    assert rec.ok and rec.format == fmt and rec.decode_format == "PNG"
    r, g, b = decoded(rec)[10, 10].astype(int)
    assert r > 240 and g < 15 and b < 15


def test_exif_orientation_is_applied(data, tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # landscape: left half red, right half blue
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    save(data / "cats" / "rotated.jpg", pixels, "JPEG", quality=95, exif=exif.tobytes())
    rec = record_of(ingest(data, tmp_path / "work"), "rotated.jpg")
    assert rec.ok and (rec.width, rec.height) == (20, 40)  # displayed size: portrait
    shown = decoded(rec)
    assert shown.shape == (40, 20, 3)
    assert shown[5, 10, 0] > 200 and shown[5, 10, 2] < 60  # after the turn, red is on top
    assert shown[35, 10, 2] > 200 and shown[35, 10, 0] < 60


def test_oversized_image_is_refused_by_pixel_count_without_decoding(data, tmp_path):
    # A real bomb: a PNG header claiming 100,000 x 100,000 pixels (10 gigapixels) and almost no data.
    bomb = data / "dogs" / "bomb.png"
    _write_png_header(bomb, 100_000, 100_000)
    rec = record_of(ingest(data, tmp_path / "work"), "bomb.png")
    assert rec.status == "quarantined"
    assert "decompression bomb" in rec.reason


def test_stricter_pixel_limit_applies_and_looser_is_refused(data, tmp_path):
    save(data / "cats" / "big.png", gradient(100, 120))
    rec = record_of(ingest(data, tmp_path / "work", max_image_pixels=10_000), "big.png")
    assert rec.status == "quarantined" and "12,000 pixels" in rec.reason and "10,000" in rec.reason
    with pytest.raises(ValueError, match="Pillow"):
        IngestConfig(max_image_pixels=PILLOW_MAX_PIXELS + 1)


def test_check_image_never_raises_for_garbage(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    result = check_image(path, max_pixels=PILLOW_MAX_PIXELS, normalised_dir=tmp_path / "n")
    assert not result.ok and result.reason


# ------------------------------------------------------------------ dataset-level errors
def test_empty_class_is_an_error_naming_the_class(data, tmp_path):
    (data / "birds").mkdir()
    with pytest.raises(DataError, match="'birds'"):
        ingest(data, tmp_path / "work")


def test_class_with_only_broken_files_is_an_error_naming_it_and_the_reason(data, tmp_path):
    (data / "fish").mkdir()
    (data / "fish" / "a.jpg").write_text("nope")
    with pytest.raises(DataError, match=r"'fish'.*not an image"):
        ingest(data, tmp_path / "work")


def test_single_class_dataset_is_an_error(tmp_path):
    root = make_classes(tmp_path / "one", {"cats": 5})
    with pytest.raises(DataError, match=r"only one class, 'cats'.*at least two"):
        ingest(root, tmp_path / "work")


def test_folder_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a.png", gradient())
    with pytest.raises(DataError, match="no class folders"):
        ingest(tmp_path / "flat", tmp_path / "work")


def test_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"does-not-exist.*does not exist"):
        ingest(tmp_path / "does-not-exist", tmp_path / "work")


def test_unicode_class_names_work_and_are_nfc(tmp_path):
    nfd = "cafe\u0301"  # "café" as macOS writes it (decomposed)
    root = make_classes(tmp_path / "data", {nfd: 4, "日本の猫": 4, "plain": 4})
    manifest = ingest(root, tmp_path / "work")
    assert manifest.classes == sorted(["caf\u00e9", "日本の猫", "plain"])
    assert manifest.class_counts()["日本の猫"] == 4
    loaded = Manifest.load(tmp_path / "work" / "manifest.json")
    assert loaded.classes == manifest.classes and "日本の猫" in json.dumps(loaded.report(), ensure_ascii=False)


# ------------------------------------------------------------------ splits
def test_split_is_stratified_and_reproducible(tmp_path):
    root = make_classes(tmp_path / "data", {"a": 40, "b": 20})
    first = ingest(root, tmp_path / "w1", seed=3)
    again = ingest(root, tmp_path / "w2", seed=3)
    other = ingest(root, tmp_path / "w3", seed=4)
    assert [r.split for r in first.records] == [r.split for r in again.records]
    assert [r.split for r in first.records] != [r.split for r in other.records]
    assert first.report()["counts"]["a"] == {"train": 28, "val": 6, "test": 6, "total": 40}
    assert first.report()["counts"]["b"] == {"train": 14, "val": 3, "test": 3, "total": 20}


def test_fractions_are_configurable(tmp_path):
    root = make_classes(tmp_path / "data", {"a": 20, "b": 20})
    manifest = ingest(root, tmp_path / "w", val_fraction=0.1, test_fraction=0.3)
    assert manifest.split_sizes() == {"train": 24, "val": 4, "test": 12}
    everything = ingest(root, tmp_path / "w0", val_fraction=0.0, test_fraction=0.0)
    assert everything.split_sizes() == {"train": 40, "val": 0, "test": 0}
    with pytest.raises(ValueError, match="below 1"):
        IngestConfig(val_fraction=0.5, test_fraction=0.5)


def test_tiny_classes_still_reach_every_split_or_say_why(tmp_path):
    root = make_classes(tmp_path / "data", {"three": 3, "two": 2, "many": 30})
    manifest = ingest(root, tmp_path / "w")
    counts = manifest.report()["counts"]
    assert counts["three"] == {"train": 1, "val": 1, "test": 1, "total": 3}
    assert counts["two"]["train"] == 1 and counts["two"]["val"] == 1 and counts["two"]["test"] == 0
    assert any("'two' has only 2" in w and "no test" in w for w in manifest.warnings)
    assert any("imbalanced" in w and "'many'" in w for w in manifest.warnings)


def test_user_splits_are_respected_and_missing_val_is_carved_from_train(tmp_path):
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 10, "b": 10})
    make_classes(root / "Test", {"a": 3, "b": 3})  # names are matched case-insensitively
    manifest = ingest(root, tmp_path / "w")
    assert manifest.user_splits
    for r in manifest.records:
        if "/Test/" in r.path.replace("\\", "/"):
            assert r.split == "test"
        else:
            assert r.split in ("train", "val")
    assert manifest.split_sizes() == {"train": 16, "val": 4, "test": 6}
    assert any("no val split" in w for w in manifest.warnings)


def test_user_splits_with_validation_folder(tmp_path):
    root = tmp_path / "data"
    for split, n in (("train", 5), ("validation", 2), ("test", 2)):
        make_classes(root / split, {"x": n, "y": n})
    manifest = ingest(root, tmp_path / "w")
    assert manifest.split_sizes() == {"train": 10, "val": 4, "test": 4}
    assert not manifest.warnings


def test_macos_leftovers_and_wrapping_folder_are_ignored(tmp_path):
    root = make_classes(tmp_path / "outer" / "photos", {"a": 3, "b": 3})
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "a" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "junk").write_bytes(b"x")
    manifest = ingest(tmp_path / "outer", tmp_path / "w")
    assert manifest.classes == ["a", "b"] and len(manifest.records) == 6 and not manifest.quarantined()


def test_manifest_round_trips_through_json(data, tmp_path):
    (data / "dogs" / "bad.jpg").write_text("x")
    manifest = ingest(data, tmp_path / "work")
    loaded = Manifest.load(tmp_path / "work" / "manifest.json")
    assert loaded == manifest
    assert loaded.report()["quarantined"][0]["reason"]
    with pytest.raises(DataError, match="does not exist"):
        Manifest.load(tmp_path / "missing.json")


def test_report_lists_counts_splits_quarantine_and_text(data, tmp_path):
    (data / "dogs" / "bad.jpg").write_text("x")
    manifest = ingest(data, tmp_path / "work")
    report = manifest.report()
    assert report["classes"] == ["cats", "dogs"] and report["num_images"] == 12 and report["num_files"] == 13
    assert sum(report["split_sizes"].values()) == 12
    text = manifest.format_report()
    assert "cats" in text and "bad.jpg" in text and "quarantined 1" in text


def test_ingest_of_the_embedded_sample(tmp_path):
    manifest = ingest(None, tmp_path)
    assert manifest.num_classes == 5 and len(manifest.usable()) == 500 and not manifest.quarantined()
    assert all(r.decode_path == r.path for r in manifest.records)  # clean PNGs are read in place
    assert (tmp_path / "manifest.json").exists()


# ------------------------------------------------------------------ helpers writing raw PNG bytes
def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _write_png_header(path: Path, width: int, height: int) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def _write_png_rgb16(path: Path, pixels: np.ndarray) -> None:
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    )
