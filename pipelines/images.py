"""Checking one image file with Pillow, and making a clean copy when TensorFlow could not read it as is.

TensorFlow's decoders read 8-bit RGB or grayscale JPEG and PNG correctly, so those files stay where they are.
Everything else that Pillow can read (CMYK, 16-bit, palette, alpha, EXIF-rotated, GIF/WebP/BMP/TIFF, ...) is
converted once to an 8-bit RGB copy, so tf.data only ever sees clean files and never fails mid-epoch.

Pillow is more lenient than TensorFlow's libpng and libjpeg, so the files read in place get the checks those
libraries make and Pillow skips (hardening report, finding C5), without importing TensorFlow:
* PNG: the whole zlib stream is inflated (its Adler-32 checksum verified), every scan line must be there and
  every filter type valid. Pillow stops once it has the pixels it wants: it accepted a bad checksum, a bad zlib
  header, a missing scan line and an unknown filter type, all of which libpng refuses.
* JPEG: the end-of-image marker must follow the scan data; libjpeg in TensorFlow fails without it, Pillow does not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import stat
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.files import atomic_path

# Formats TensorFlow decodes with `decode_jpeg` / `decode_png` in the tf.data path.
TF_FORMATS = ("JPEG", "PNG")
# Pillow's own pixel limit (about 89.5 megapixels). Stricter limits are allowed; looser ones are not.
PILLOW_MAX_PIXELS = 89_478_485
_EXIF_ORIENTATION = 0x0112
_BLOCK = 1 << 20  # bytes read or inflated at a time by the stream checks, so memory stays bounded
# Adam7 interlacing: (first column, first row, column step, row step) of each of the seven passes.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """What one pass of Pillow over a file found."""

    ok: bool
    width: int = 0
    height: int = 0
    format: str = ""
    reason: str = ""
    decode_path: str = ""


class NotARegularFile(OSError):
    """A FIFO, device, socket or folder where an image file was expected."""


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kinds += ((stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open `path` for binary reading, refusing anything but a regular file (NotARegularFile).

    Reading a FIFO blocks until a writer appears, that is forever, and device files can block or have side
    effects on open (hardening report, finding A8). `stat` first, so those are never opened; then O_NONBLOCK (no
    effect on regular files) and `fstat` of what was opened, in case the path was swapped in between.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"{_file_kind(mode)}, not an image file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{_file_kind(mode)}, not an image file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_at(fh: BinaryIO, offset: int, size: int) -> bytes:
    """`size` bytes at `offset`, leaving the position where it was (Pillow reads from the same file object)."""
    position = fh.tell()
    try:
        fh.seek(offset)
        return fh.read(size)
    finally:
        fh.seek(position)


def _png_bit_depth(fh: BinaryIO) -> int:
    """The PNG bit depth from the IHDR chunk (byte 24). Pillow hides it for 16-bit RGB(A) images."""
    header = _read_at(fh, 0, 26)
    return header[24] if len(header) >= 25 else 8


def _png_scanlines(ihdr: bytes) -> list[tuple[int, int]]:
    """(count, bytes per scan line including its filter byte) of each interlace pass, from the IHDR data."""
    width, height = int.from_bytes(ihdr[0:4], "big"), int.from_bytes(ihdr[4:8], "big")
    bits = ihdr[8] * _PNG_CHANNELS.get(ihdr[9], 4)
    out = []
    for x0, y0, dx, dy in _ADAM7 if ihdr[12] else ((0, 0, 1, 1),):
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:  # an empty pass has no bytes at all, not even filter bytes
            out.append((rows, 1 + (columns * bits + 7) // 8))
    return out


def _png_chunks(fh: BinaryIO):
    """(type, data length, offset) of each chunk, with `fh` at the chunk's data; the caller reads or skips it."""
    position = 8
    while True:
        fh.seek(position)
        head = fh.read(8)
        if len(head) < 8:
            return
        length = int.from_bytes(head[:4], "big")
        yield head[4:], length, position
        position += 12 + length


class _Scanlines:
    """Counts a PNG's inflated image bytes and checks the filter type that starts each scan line."""

    def __init__(self, ihdr: bytes) -> None:
        passes = _png_scanlines(ihdr)
        self.expected = sum(count * size for count, size in passes)
        self.produced = 0
        self._lengths = itertools.chain.from_iterable(itertools.repeat(size, count) for count, size in passes)
        self._next = 0.0  # offset of the next filter byte in the inflated stream (inf after the last line)

    def feed(self, out: bytes) -> str:
        while self._next < self.produced + len(out):
            kind = out[int(self._next) - self.produced]
            if kind > 4:
                return f"corrupt PNG: scan line filter type {kind} (valid: 0-4)"
            self._next += next(self._lengths, math.inf)
        self.produced += len(out)
        if self.produced > self.expected + _BLOCK:
            return "corrupt PNG: the compressed image data holds far more bytes than the image needs"
        return ""


def _inflate_idat(fh: BinaryIO, length: int, inflater, lines: _Scanlines) -> str:
    """Inflate one IDAT chunk's data in bounded blocks; the problem found, or ""."""
    while length and not inflater.eof:
        data = fh.read(min(length, _BLOCK))
        length -= len(data)
        while data and not inflater.eof:
            if problem := lines.feed(inflater.decompress(data, _BLOCK)):
                return problem
            data = inflater.unconsumed_tail
    return ""


def png_data_problem(fh: BinaryIO) -> str:
    """Why libpng (TensorFlow's PNG decoder) would refuse this PNG's data, or "" when it would not.

    Inflates the whole IDAT stream in bounded blocks, as libpng does: the zlib header and Adler-32 checksum, the
    end of the stream, the number of scan-line bytes and each line's filter type (0-4) must all be right, and
    every chunk up to an empty IEND must be whole.
    """
    size = os.fstat(fh.fileno()).st_size
    inflater = zlib.decompressobj()
    lines = None
    try:
        for kind, length, position in _png_chunks(fh):
            name = kind.decode("latin-1")
            if position + 12 + length > size:
                return f"corrupt PNG: chunk {name!r} runs past the end of the file (truncated or damaged)"
            if kind == b"IHDR":
                lines = _Scanlines(fh.read(13))
            elif kind == b"IDAT" and lines is not None:
                if problem := _inflate_idat(fh, length, inflater, lines):
                    return problem
            elif kind == b"IEND":
                if length:
                    return f"corrupt PNG: the IEND chunk claims {length:,} bytes of data (it has none)"
                break
        else:
            return "corrupt PNG: the file ends without an IEND chunk (truncated)"
    except zlib.error as exc:
        return f"corrupt PNG: the compressed image data fails zlib's checks ({exc})"
    if lines is None or not inflater.eof:
        return "corrupt PNG: the compressed image data stops before its end (truncated or damaged)"
    if lines.produced < lines.expected:
        return f"corrupt PNG: the image data has {lines.produced:,} of the {lines.expected:,} bytes its size needs"
    return ""


def jpeg_data_problem(fh: BinaryIO) -> str:
    """Why libjpeg in TensorFlow would refuse this JPEG although Pillow decoded it, or "" when it would not.

    Pillow stops once it has every scan line; TensorFlow's libjpeg then reads on to the end-of-image marker
    (FFD9) and fails without one ("Input file read error").
    """
    position = 2  # after the start-of-image marker
    while True:  # walk the marker segments up to the first start-of-scan; EXIF thumbnails hold FFD9 of their own
        head = _read_at(fh, position, 4)
        if len(head) < 4:
            return ""  # no scan found this way: leave the verdict to Pillow's decode, which passed
        if head[0] != 0xFF or head[1] == 0xFF:  # stray bytes or fill bytes: libjpeg skips to the next marker
            position += 1
            continue
        if head[1] == 0x01 or 0xD0 <= head[1] <= 0xD7:  # markers without a length
            position += 2
            continue
        position += 2 + int.from_bytes(head[2:4], "big")
        if head[1] == 0xDA:  # start of scan: entropy-coded data follows, where FF is always escaped
            break
    previous = b""
    while block := _read_at(fh, position, _BLOCK):
        if b"\xff\xd9" in previous + block:
            return ""
        previous, position = block[-1:], position + len(block)
    return "corrupt JPEG: no end-of-image marker (FFD9) after the image data (truncated or damaged)"


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        return 1


def _needs_conversion(image: Image.Image, fh: BinaryIO) -> bool:
    if image.format not in TF_FORMATS or image.mode not in ("RGB", "L"):
        return True
    if getattr(image, "is_animated", False):
        return True
    if image.format == "PNG" and (_png_bit_depth(fh) != 8 or "transparency" in image.info):
        return True
    return _orientation(image) not in (0, 1)


def to_rgb8(image: Image.Image) -> Image.Image:
    """An 8-bit RGB version of any Pillow image (first frame, EXIF orientation applied, alpha over white).

    Why white: fully transparent pixels often hold arbitrary colours (often black) that carry no meaning.
    Why not `convert("L")` for 16-bit: Pillow clips instead of scaling, which turns most 16-bit images white.
    """
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image).astype(np.float64)
        top = pixels.max() if pixels.size else 0.0
        if image.mode.startswith("I;16") or 255 < top <= 65535:
            pixels = pixels / 257.0
        elif top > 65535:
            pixels = (pixels - pixels.min()) * (255.0 / max(top - pixels.min(), 1.0))
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def check_image(path: Path, *, max_pixels: int, normalised_dir: Path | None) -> ImageCheck:
    """Open, fully decode and, when needed, normalise one file. Never raises for a bad file.

    The whole file is decoded (a header check misses truncated data). Large JPEGs are decoded in Pillow's
    draft mode, which still reads every byte of the entropy-coded data but skips most of the inverse DCT.
    Only regular files are opened (a FIFO would block forever).
    """
    if max_pixels > PILLOW_MAX_PIXELS:
        raise ValueError(f"max_pixels={max_pixels} is looser than Pillow's limit {PILLOW_MAX_PIXELS}")
    try:
        with warnings.catch_warnings(), open_regular(path) as fh:
            # Pillow warns between its limit and twice its limit; we refuse both (and stricter limits below).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _check_open_file(fh, Path(path), max_pixels, normalised_dir)
    except NotARegularFile as exc:
        return ImageCheck(False, reason=f"{exc}; only regular files are read")
    except Image.DecompressionBombError as exc:
        return ImageCheck(False, 0, 0, "", f"decompression bomb refused: {exc}")
    except Image.DecompressionBombWarning as exc:
        return ImageCheck(False, 0, 0, "", f"decompression bomb refused: {exc}")
    except UnidentifiedImageError:
        return ImageCheck(False, reason="not an image file Pillow can read (unknown or corrupt format)")
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError, IndexError, KeyError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text:
            text = f"truncated file ({text})"
        return ImageCheck(False, reason=f"unreadable image: {text}")


def _check_open_file(fh: BinaryIO, path: Path, max_pixels: int, normalised_dir: Path | None) -> ImageCheck:
    with Image.open(fh) as image:
        fmt = image.format or ""
        width, height = image.size
        if width * height > max_pixels:
            return ImageCheck(
                False,
                width,
                height,
                fmt,
                f"image of {width}x{height} = {width * height:,} pixels is over the limit of "
                f"{max_pixels:,} pixels (possible decompression bomb); resize it",
            )
        if fmt == "PNG" and (problem := _at_same_position(fh, png_data_problem)):
            # Every PNG, converted or not: Pillow leaves missing scan lines black, and libpng refuses it all.
            return ImageCheck(False, width, height, fmt, _cannot_decode(problem))
        if fmt != "JPEG":
            # Decode before anything reads EXIF: Pillow's PNG getexif() loads the pixels itself, `_orientation`
            # would swallow a decode error, and the next load() is then a no-op. That let damaged PNGs through
            # as "ok", and damaged palette or RGBA PNGs became normalised copies (finding C5).
            image.load()
        if _orientation(image) in (5, 6, 7, 8):
            width, height = height, width
        convert = _needs_conversion(image, fh)
        if fmt == "JPEG" and not convert:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        if convert:
            if normalised_dir is None:
                raise ValueError("normalised_dir is required to convert images")
            return ImageCheck(True, width, height, fmt, "", str(_write_normalised(image, path, fmt, normalised_dir)))
    # Read in place, so TensorFlow's decoder will see these very bytes: make the checks it makes and Pillow skips.
    fh.seek(0)
    if fmt == "PNG":
        # verify() checks every chunk's CRC (libpng refuses a bad one that Pillow's decoder reads past).
        with Image.open(fh) as again:
            again.verify()
    elif problem := jpeg_data_problem(fh):
        return ImageCheck(False, width, height, fmt, _cannot_decode(problem))
    return ImageCheck(True, width, height, fmt, "", str(path))


def _at_same_position(fh: BinaryIO, check):
    position = fh.tell()
    try:
        return check(fh)
    finally:
        fh.seek(position)


def _cannot_decode(problem: str) -> str:
    return f"{problem}; TensorFlow cannot decode it, re-save the image from an intact copy"


def _write_normalised(image: Image.Image, path: Path, fmt: str, out_dir: Path) -> Path:
    """Save a clean 8-bit RGB copy once; JPEG sources stay JPEG (quality 95), the rest become lossless PNG."""
    rgb = to_rgb8(image)
    info = path.stat()
    key = hashlib.sha1(f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:20]
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        target = out_dir / f"{key}.jpg"
        save = dict(format="JPEG", quality=95)
    else:
        target = out_dir / f"{key}.png"
        save = dict(format="PNG", compress_level=1)
    if not target.exists():
        with atomic_path(target) as tmp:
            rgb.save(tmp, **save)
    return target
