"""Encoded image bytes → model input, as TensorFlow ops: the preprocessing of serving and prediction.

This is the evaluation path of `pipelines.dataset` (centre square crop of the short side, JPEGs decoded
with libjpeg's DCT-domain downscaling whenever the crop stays at least the target size, bilinear resize,
rounding to 8-bit) rewritten for bytes whose size is only known once they arrive, because the
pipelines read files whose size the manifest already holds. The same functions run inside the exported
SavedModel graph, in `workbench predict` for `.keras` and TFLite files, in the app's Try-it box, in
Grad-CAM and for the int8 calibration images, so every format sees identical pixels.

Ingest (`pipelines.images.to_rgb8`) gives training a normalised copy of every file TensorFlow would read
differently, so this module also does, with TensorFlow ops only (the SavedModel needs nothing else):

* EXIF orientation of a JPEG, read from its first APP1 `Exif` segment (values 2 to 8 flip and transpose);
* alpha composited over white for PNGs with an alpha channel or a palette transparency, GIFs with a
  transparent colour and WebP (Pillow ignores a colour-key `tRNS` on grey or RGB PNGs, and so does this);
* only the first frame of a GIF: the bytes after its first image are cut before decoding;
* the ingest pixel limit (`MAX_PIXELS`), checked on the header's size before anything is decoded, so a
  small file that decodes to gigabytes (a decompression bomb) is an error, not an out-of-memory kill.

`tests/test_export_savedmodel.py` and `tests/test_serving_pixels.py` check the pixels against the pipelines.
"""

from __future__ import annotations

import functools

from pipelines.images import PILLOW_MAX_PIXELS

# The largest image (width x height, pixels) decoded anywhere: the ingest default, so serving refuses
# what training would have quarantined. At 4 bytes a pixel this bounds one decode to about 360 MB.
MAX_PIXELS = PILLOW_MAX_PIXELS
# DCT downscale ratios libjpeg supports, as in pipelines.dataset.
_RATIOS = (1, 2, 4, 8)
# Format codes (branch indices of `tf.switch_case`).
_JPEG, _PNG, _GIF, _BMP, _WEBP, _OTHER = range(6)
_EXIF_ORIENTATION = 0x0112
_TIFF_SHORT, _TIFF_LONG = 3, 4
_MAX_IFD_ENTRIES = 256  # IFD0 of a camera JPEG has 10 to 30 entries
_MAX_JPEG_SEGMENTS = 256  # segments before the image data; Exif comes first or second in practice


def _bytes(data, pos, n: int):
    """`n` bytes of `data` from `pos` as int64 (n,); zero-padded past the end, so never an error."""
    import tensorflow as tf

    length = tf.cast(tf.strings.length(data), tf.int64)
    pos = tf.cast(tf.clip_by_value(tf.cast(pos, tf.int64), 0, length), tf.int32)
    return tf.cast(tf.io.decode_raw(tf.strings.substr(data, pos, n), tf.uint8, fixed_length=n), tf.int64)


def _uint(values, big_endian):
    """Unsigned integers from bytes on the last axis (int64), big- or little-endian (bool tensor)."""
    import tensorflow as tf

    k = values.shape[-1]
    big = tf.constant([256 ** (k - 1 - i) for i in range(k)], tf.int64)
    little = tf.constant([256**i for i in range(k)], tf.int64)
    return tf.reduce_sum(values * tf.where(big_endian, big, little), axis=-1)


def _format(data):
    """The format code of encoded bytes, from their magic number."""
    import tensorflow as tf

    head = tf.strings.substr(data, 0, 12)
    checks = [
        (_JPEG, tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"),
        (_PNG, tf.strings.substr(head, 0, 8) == b"\x89PNG\r\n\x1a\n"),
        (_GIF, tf.strings.substr(head, 0, 4) == b"GIF8"),
        (_BMP, tf.strings.substr(head, 0, 2) == b"BM"),
        (_WEBP, (tf.strings.substr(head, 0, 4) == b"RIFF") & (tf.strings.substr(head, 8, 4) == b"WEBP")),
    ]
    code = tf.constant(_OTHER, tf.int32)
    for value, matches in reversed(checks):
        code = tf.where(matches, value, code)
    return code


def _webp_shape(data):
    """(height, width) of a WebP from its first chunk: VP8X (extended), VP8L (lossless) or VP8 (lossy)."""
    import tensorflow as tf

    chunk = tf.strings.substr(data, 12, 4)
    vp8x = 1 + _uint(_bytes(data, 27, 3), False), 1 + _uint(_bytes(data, 24, 3), False)
    b = _bytes(data, 21, 4)  # VP8L: 14-bit width - 1, then 14-bit height - 1, after the 0x2f signature
    bits = _uint(b, False)
    vp8l = 1 + (bits // 2**14) % 2**14, 1 + bits % 2**14
    vp8 = _uint(_bytes(data, 28, 2), False) % 2**14, _uint(_bytes(data, 26, 2), False) % 2**14
    height = tf.where(chunk == b"VP8X", vp8x[0], tf.where(chunk == b"VP8L", vp8l[0], vp8[0]))
    width = tf.where(chunk == b"VP8X", vp8x[1], tf.where(chunk == b"VP8L", vp8l[1], vp8[1]))
    return height, width


def image_shape(data):
    """(height, width) int64 from the header of encoded JPEG/PNG/GIF/BMP/WebP bytes, decoding no pixels.

    (0, 0) for bytes of another format (their decode fails later with TensorFlow's own message). A GIF's
    size is its logical screen's, which every frame is drawn on.
    """
    import tensorflow as tf

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1]

    def png():  # IHDR: width then height, big-endian, at bytes 16 and 20
        return _uint(_bytes(data, 20, 4), True), _uint(_bytes(data, 16, 4), True)

    def gif():  # logical screen: width then height, little-endian, at bytes 6 and 8
        return _uint(_bytes(data, 8, 2), False), _uint(_bytes(data, 6, 2), False)

    def bmp():  # BITMAPINFOHEADER: signed width and height (negative height: top-down rows)
        def signed(value):
            return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

        return signed(_uint(_bytes(data, 22, 4), False)), signed(_uint(_bytes(data, 18, 4), False))

    def webp():
        return _webp_shape(data)

    def other():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    return tf.switch_case(_format(data), [jpeg, png, gif, bmp, webp, other])


def _within_pixel_limit(data):
    """`data`, once its header size is checked against `MAX_PIXELS`: the decoders depend on the check."""
    import tensorflow as tf

    height, width = image_shape(data)
    check = tf.debugging.Assert(
        height * width <= MAX_PIXELS,
        [
            f"image over the limit of {MAX_PIXELS:,} pixels (possible decompression bomb); resize it. "
            "Height and width:",
            height,
            width,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(data)


def _jpeg_orientation(data):
    """The EXIF orientation (1 to 8, int32) from a JPEG's first APP1 `Exif` segment; 1 when there is none.

    Hand-written (TensorFlow has no EXIF reader): the segments before the image data are walked by their
    lengths, then IFD0 of the TIFF structure inside the segment is searched for tag 0x0112, as Pillow's
    `getexif` (used by ingest) does.
    """
    import tensorflow as tf

    length = tf.strings.length(data)

    def walking(pos, tiff):
        return (tiff == -1) & (pos + 4 <= length)

    def step(pos, tiff):
        marker = _bytes(data, pos, 4)
        is_exif = (marker[1] == 0xE1) & (tf.strings.substr(data, pos + 4, 6) == b"Exif\x00\x00")
        stop = (marker[0] != 0xFF) | (marker[1] == 0xDA) | (marker[1] == 0xD9)  # not a marker, scan, end
        fill = marker[1] == 0xFF  # padding 0xFF bytes before a marker
        following = pos + tf.where(fill, 1, 2 + tf.cast(marker[2] * 256 + marker[3], tf.int32))
        tiff = tf.where(is_exif & ~stop, pos + 10, tf.where(stop, -2, -1))
        return following, tiff

    _, tiff = tf.while_loop(walking, step, (tf.constant(2), tf.constant(-1)), maximum_iterations=_MAX_JPEG_SEGMENTS)
    order = tf.strings.substr(data, tf.maximum(tiff, 0), 2)
    big = order == b"MM"
    ifd = tf.cast(tiff, tf.int64) + _uint(_bytes(data, tiff + 4, 4), big)
    count = _uint(_bytes(data, ifd, 2), big)
    entries = tf.reshape(_bytes(data, ifd + 2, 12 * _MAX_IFD_ENTRIES), (_MAX_IFD_ENTRIES, 12))
    kind = _uint(entries[:, 2:4], big)
    value = tf.where(
        kind == _TIFF_SHORT, _uint(entries[:, 8:10], big), tf.where(kind == _TIFF_LONG, _uint(entries[:, 8:12], big), 0)
    )
    match = (_uint(entries[:, 0:2], big) == _EXIF_ORIENTATION) & (tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count)
    orientation = tf.gather(value, tf.argmax(tf.cast(match, tf.int32)))
    valid = (tiff >= 0) & (big | (order == b"II")) & tf.reduce_any(match) & (orientation >= 1) & (orientation <= 8)
    return tf.where(valid, tf.cast(orientation, tf.int32), 1)


def _orientation_steps(orientation):
    """(flip rows, flip columns, transpose) that turn the stored pixels into the picture EXIF describes.

    As `PIL.ImageOps.exif_transpose`: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise; the flips come before the transpose.
    """
    flip_rows = (orientation == 3) | (orientation == 4) | (orientation == 6) | (orientation == 7)
    flip_cols = (orientation == 2) | (orientation == 3) | (orientation == 7) | (orientation == 8)
    return flip_rows, flip_cols, orientation >= 5


def _orient(image, flip_rows, flip_cols, transpose):
    import tensorflow as tf

    image = tf.cond(flip_rows, lambda: tf.reverse(image, [0]), lambda: image)
    image = tf.cond(flip_cols, lambda: tf.reverse(image, [1]), lambda: image)
    return tf.cond(transpose, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)


def _over_white(rgba):
    """uint8 RGBA → RGB composited over opaque white, with Pillow's integer arithmetic (`alpha_composite`),
    so the pixels equal ingest's normalised copies exactly."""
    import tensorflow as tf

    pixels = tf.cast(rgba, tf.int32)
    alpha = pixels[..., 3:]
    # Pillow: 7 fractional bits, then a division by 255 as ((t >> 8) + t) >> 8 with rounding.
    t = 128 * (pixels[..., :3] * alpha + 255 * (255 - alpha)) + 128 * 128
    return tf.cast((t // 256 + t) // 256 // 128, tf.uint8)


_BYTE_VALUES = tuple(bytes([i]) for i in range(256))


def _gif_first_frame(data):
    """The GIF cut after its first image, its transparent colour (if any) made opaque white.

    TensorFlow decodes every frame of a GIF and draws transparent pixels black; ingest (Pillow) takes the
    first frame and composites it over white. GIF transparency is one palette index, so making that
    palette entry white and clearing the transparency flag composites exactly. The blocks are walked by
    their lengths (hand-written: TensorFlow has no GIF parser that stops after one frame).
    """
    import tensorflow as tf

    length = tf.strings.length(data)
    screen = _bytes(data, 10, 1)[0]
    has_global = screen >= 128
    global_size = tf.cast(tf.where(has_global, 3 * 2 ** (screen % 8 + 1), 0), tf.int32)
    none = tf.constant(-1)

    def walking(pos, mode, *_):
        return (mode != 3) & (pos < length)

    # mode: 0 between blocks, 1 in an extension's sub-blocks, 2 in the image's sub-blocks, 3 done.
    def step(pos, mode, end, control, palette, palette_size):
        b = _bytes(data, pos, 10)
        in_blocks = (mode == 1) | (mode == 2)
        block_end = in_blocks & (b[0] == 0)
        is_control = (mode == 0) & (b[0] == 0x21) & (b[1] == 0xF9) & (control < 0)
        is_image = (mode == 0) & (b[0] == 0x2C)
        local = b[9] >= 128
        local_size = tf.cast(tf.where(local, 3 * 2 ** (b[9] % 8 + 1), 0), tf.int32)
        following = tf.where(
            in_blocks, pos + 1 + tf.cast(b[0], tf.int32), tf.where(is_image, pos + 11 + local_size, pos + 2)
        )
        new_mode = tf.where(
            in_blocks,
            tf.where(block_end, tf.where(mode == 2, 3, 0), mode),
            tf.where(is_image, 2, tf.where(b[0] == 0x21, 1, 3)),  # anything else (trailer, junk) ends the walk
        )
        end = tf.where(block_end & (mode == 2), pos + 1, end)
        control = tf.where(is_control, pos, control)
        palette = tf.where(is_image & local, pos + 10, palette)
        palette_size = tf.where(is_image & local, local_size, palette_size)
        return following, new_mode, end, control, palette, palette_size

    start = 13 + global_size
    _, mode, end, control, palette, palette_size = tf.while_loop(
        walking, step, (start, tf.constant(0), none, none, tf.where(has_global, 13, -1), global_size)
    )
    # reduce_join, not strings.join: StringJoin is an op the SavedModel vetting keeps to saver functions.
    cut = tf.where(mode == 3, tf.strings.reduce_join([tf.strings.substr(data, 0, end), b";"]), data)
    flags, index = _bytes(cut, control + 3, 1)[0], _bytes(cut, control + 6, 1)[0]
    entry = palette + 3 * tf.cast(index, tf.int32)
    transparent = (control >= 0) & (flags % 2 == 1) & (palette >= 0) & (3 * tf.cast(index, tf.int32) < palette_size)

    def replace(text, pos, new, n):
        return tf.strings.reduce_join([tf.strings.substr(text, 0, pos), new, tf.strings.substr(text, pos + n, -1)])

    def opaque_white():
        cleared = tf.gather(tf.constant(_BYTE_VALUES), flags - 1)  # the flags byte without its lowest bit
        return replace(replace(cut, control + 3, cleared, 1), entry, b"\xff\xff\xff", 3)

    return tf.cond(transparent, opaque_white, lambda: cut)


def _decode_non_jpeg(data, fmt):
    """uint8 RGB (H, W, 3) of a PNG, GIF (first frame), BMP or WebP, alpha composited over white."""
    import tensorflow as tf

    def png():
        # Pillow composites an alpha channel (colour types 4, 6) or a palette's tRNS (3); it ignores a
        # colour-key tRNS on grey and RGB images, so those are decoded without alpha here too.
        colour_type = _bytes(data, 25, 1)[0]
        with_alpha = (colour_type == 3) | (colour_type == 4) | (colour_type == 6)
        return tf.cond(
            with_alpha, lambda: _over_white(tf.io.decode_png(data, channels=4)), lambda: tf.io.decode_png(data, 3)
        )

    def gif():
        return tf.io.decode_gif(_gif_first_frame(data))[0]

    def webp():
        image = tf.io.decode_webp(data)[0]  # RGB, or RGBA when the file has alpha (it refuses other counts)
        opaque = tf.fill(tf.concat([tf.shape(image)[:2], [1]], 0), tf.constant(255, tf.uint8))
        return _over_white(tf.concat([image, opaque], axis=-1)[..., :4])

    def other():  # BMP, and anything else: decode_image names the formats it supports when it fails
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    branches = {_PNG: png, _GIF: gif, _WEBP: webp}
    image = tf.switch_case(fmt - 1, [branches.get(code, other) for code in range(_PNG, _OTHER + 1)])
    image.set_shape([None, None, 3])
    return image


def _centre_window(height, width):
    import tensorflow as tf

    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _to_uint8(image):
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _decode_jpeg_centre(data, size: int):
    """Centre square of a JPEG as EXIF orientation shows it, decoded at the largest DCT ratio that keeps it at
    least `size` pixels. Only the window is decoded, then flipped and transposed."""
    import tensorflow as tf

    shape = tf.image.extract_jpeg_shape(data)
    height, width = shape[0], shape[1]
    flip_rows, flip_cols, transpose = _orientation_steps(_jpeg_orientation(data))
    y, x, side = _centre_window(height, width)
    # The centre square of the picture, in stored coordinates: along a reversed axis the odd leftover
    # pixel falls on the other side.
    y = tf.where(flip_rows, height - side - y, y)
    x = tf.where(flip_cols, width - side - x, x)
    index = tf.constant(0, tf.int32)
    for i, r in enumerate(_RATIOS[1:], 1):
        index = tf.where(side // r >= size, i, index)

    def branch(r):
        def decode():
            h_scaled, w_scaled = (height + r - 1) // r, (width + r - 1) // r
            ys, xs = y // r, x // r
            h = tf.clip_by_value(side // r, 1, h_scaled - ys)
            w = tf.clip_by_value(side // r, 1, w_scaled - xs)
            return tf.io.decode_and_crop_jpeg(data, tf.stack([ys, xs, h, w]), channels=3, ratio=r)

        return decode

    return _orient(tf.switch_case(index, [branch(r) for r in _RATIOS]), flip_rows, flip_cols, transpose)


def _decode_other_centre(data, fmt):
    """Centre square of a PNG, GIF (first frame), BMP or WebP."""
    import tensorflow as tf

    image = _decode_non_jpeg(data, fmt)
    shape = tf.shape(image)
    y, x, side = _centre_window(shape[0], shape[1])
    return image[y : y + side, x : x + side]


def _decode_rgb_graph(data):
    import tensorflow as tf

    data = _within_pixel_limit(data)
    fmt = _format(data)

    def jpeg():
        return _orient(tf.io.decode_jpeg(data, channels=3), *_orientation_steps(_jpeg_orientation(data)))

    image = tf.cond(fmt == _JPEG, jpeg, lambda: _decode_non_jpeg(data, fmt))
    image.set_shape([None, None, 3])
    return image


@functools.cache
def _compiled_decode_rgb():
    import tensorflow as tf

    return tf.function(_decode_rgb_graph, input_signature=[tf.TensorSpec((), tf.string)], autograph=False)


def decode_rgb(data):
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes (scalar string tensor) → uint8 RGB (H, W, 3), the whole picture as
    ingest sees it (EXIF orientation applied, alpha over white, first frame); grayscale is expanded."""
    import tensorflow as tf

    return _compiled_decode_rgb()(data) if tf.executing_eagerly() else _decode_rgb_graph(data)


def preprocess_bytes(data, size: int):
    """One encoded image → float32 (size, size, 3) RGB in [0, 255], exactly as the evaluation pipeline."""
    import tensorflow as tf

    data = _within_pixel_limit(data)
    fmt = _format(data)
    image = tf.cond(fmt == _JPEG, lambda: _decode_jpeg_centre(data, size), lambda: _decode_other_centre(data, fmt))
    image.set_shape([None, None, 3])
    image = _to_uint8(tf.image.resize(image, [size, size], method="bilinear"))
    image.set_shape([size, size, 3])
    return tf.cast(image, tf.float32)


def resize_images(images, size: int):
    """Float RGB images (B, H, W, 3) in [0, 255] of any size → (B, size, size, 3): centre square, bilinear."""
    import tensorflow as tf

    shape = tf.shape(images)
    y, x, side = _centre_window(shape[1], shape[2])
    square = images[:, y : y + side, x : x + side, :]
    return tf.image.resize(tf.cast(square, tf.float32), [size, size], method="bilinear")


def _decode_batch_graph(encoded, size: int):
    import tensorflow as tf

    return tf.map_fn(
        lambda data: preprocess_bytes(data, size),
        encoded,
        fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32),
    )


@functools.cache
def _compiled_decode_batch(size: int):
    """`decode_batch` as a graph, for eager callers: the header walks are loops, slow when run op by op."""
    import tensorflow as tf

    return tf.function(
        lambda encoded: _decode_batch_graph(encoded, size),
        input_signature=[tf.TensorSpec((None,), tf.string)],
        autograph=False,
    )


def decode_batch(encoded, size: int):
    """A batch of encoded images (string tensor of shape (B,)) → float32 (B, size, size, 3) in [0, 255]."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return _compiled_decode_batch(size)(encoded)
    return _decode_batch_graph(encoded, size)  # inside a graph being traced (the SavedModel): inline ops


@functools.cache
def _compiled_image_shape():
    """`image_shape` as a graph: eagerly, its header reads are a few dozen ops run one by one (about 2 ms an
    image, which `workbench serve` pays per request); traced once, a tenth of that."""
    import tensorflow as tf

    return tf.function(image_shape, input_signature=[tf.TensorSpec((), tf.string)], autograph=False)


def decode_errors() -> tuple[type[Exception], ...]:
    """How TensorFlow fails on bytes that are not an image: InvalidArgumentError, or UnicodeDecodeError when the
    error message it builds quotes the bytes (a 3-byte JPEG signature does that)."""
    import tensorflow as tf

    return (tf.errors.InvalidArgumentError, UnicodeDecodeError)


def undecodable(source: str) -> ValueError:
    """The error for bytes that are not an image TensorFlow decodes: another format, or a corrupt or truncated
    file whose header looked right. One message for `predict`, the header check and `workbench serve`."""
    return ValueError(f"{source}: not an image TensorFlow can decode; use JPEG, PNG, GIF, BMP or WebP files")


def check_image_bytes(data: bytes, source: str) -> tuple[int, int]:
    """(height, width) of encoded image bytes, read from the header; raises ValueError naming `source` when
    the format is not one TensorFlow decodes or the image is over `MAX_PIXELS` (before any decoding)."""
    import tensorflow as tf

    try:
        height, width = (int(v) for v in _compiled_image_shape()(tf.constant(data)))
    except decode_errors():
        height = width = 0
    if height * width == 0:
        raise undecodable(source)
    if height * width > MAX_PIXELS:
        raise ValueError(
            f"{source}: image of {width}x{height} = {width * height:,} pixels is over the limit of {MAX_PIXELS:,} "
            "pixels (possible decompression bomb); resize it"
        )
    return height, width


def read_image_file(path) -> bytes:
    """The bytes of an image file, checked by `check_image_bytes` (errors name the file)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found; check the path")
    data = path.read_bytes()
    check_image_bytes(data, str(path))
    return data


def load_files(paths, size: int):
    """Read image files into a float32 (N, size, size, 3) NumPy array through the same ops."""
    import numpy as np
    import tensorflow as tf

    if not paths:
        return np.zeros((0, size, size, 3), np.float32)
    encoded = tf.constant([read_image_file(p) for p in paths])
    return decode_batch(encoded, size).numpy()
