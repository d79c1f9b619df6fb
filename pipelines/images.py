"""Checking one image file with Pillow, and making a clean copy when TensorFlow could not read it as is.

TensorFlow's decoders read 8-bit RGB or grayscale JPEG and PNG correctly, so those files stay where they are.
Everything else that Pillow can read (CMYK, 16-bit, palette, alpha, EXIF-rotated, GIF/WebP/BMP/TIFF, ...) is
converted once to an 8-bit RGB copy, so tf.data only ever sees clean files and never fails mid-epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats TensorFlow decodes with `decode_jpeg` / `decode_png` in the tf.data path.
TF_FORMATS = ("JPEG", "PNG")
# Pillow's own pixel limit (about 89.5 megapixels). Stricter limits are allowed; looser ones are not.
PILLOW_MAX_PIXELS = 89_478_485
_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """What one pass of Pillow over a file found."""

    ok: bool
    width: int = 0
    height: int = 0
    format: str = ""
    reason: str = ""
    decode_path: str = ""


def _png_bit_depth(path: Path) -> int:
    """The PNG bit depth from the IHDR chunk (byte 24). Pillow hides it for 16-bit RGB(A) images."""
    with open(path, "rb") as f:
        header = f.read(26)
    return header[24] if len(header) >= 25 else 8


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        return 1


def _needs_conversion(image: Image.Image, path: Path) -> bool:
    if image.format not in TF_FORMATS or image.mode not in ("RGB", "L"):
        return True
    if getattr(image, "is_animated", False):
        return True
    if image.format == "PNG" and (_png_bit_depth(path) != 8 or "transparency" in image.info):
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
    """
    if max_pixels > PILLOW_MAX_PIXELS:
        raise ValueError(f"max_pixels={max_pixels} is looser than Pillow's limit {PILLOW_MAX_PIXELS}")
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice its limit; we refuse both (and stricter limits below).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
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
                if _orientation(image) in (5, 6, 7, 8):
                    width, height = height, width
                convert = _needs_conversion(image, path)
                if fmt == "JPEG" and not convert:
                    image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
                if fmt == "PNG" and not convert:
                    # TensorFlow's libpng refuses bad chunk checksums that Pillow's decoder reads past:
                    # verify() checks every chunk's CRC (no decompression), so tf.data never meets one.
                    with Image.open(path) as again:
                        again.verify()
                decode_path = str(path)
                if convert:
                    if normalised_dir is None:
                        raise ValueError("normalised_dir is required to convert images")
                    decode_path = str(_write_normalised(image, path, fmt, normalised_dir))
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
    return ImageCheck(True, width, height, fmt, "", decode_path)


def _write_normalised(image: Image.Image, path: Path, fmt: str, out_dir: Path) -> Path:
    """Save a clean 8-bit RGB copy once; JPEG sources stay JPEG (quality 95), the rest become lossless PNG."""
    rgb = to_rgb8(image)
    stat = path.stat()
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        target = out_dir / f"{key}.jpg"
        save = dict(format="JPEG", quality=95)
    else:
        target = out_dir / f"{key}.png"
        save = dict(format="PNG", compress_level=1)
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        rgb.save(tmp, **save)
        os.replace(tmp, target)
    return target
