"""Encoded image bytes → model input, as TensorFlow ops: the preprocessing of serving and prediction.

This is the evaluation path of `pipelines.dataset` (centre square crop of the short side, JPEGs decoded
with libjpeg's DCT-domain downscaling whenever the crop stays at least the target size, bilinear resize,
rounding to 8-bit) rewritten for bytes whose size is only known once they arrive, because the
pipelines read files whose size the manifest already holds. `tests/test_export_savedmodel.py` checks
that both give the same pixels. The same functions run inside the exported SavedModel graph, in
`workbench predict` for `.keras` and TFLite files, and for the int8 calibration images, so every
format sees identical pixels.
"""

from __future__ import annotations

# DCT downscale ratios libjpeg supports, as in pipelines.dataset.
_RATIOS = (1, 2, 4, 8)


def _centre_window(height, width):
    import tensorflow as tf

    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _to_uint8(image):
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _decode_jpeg_centre(data, size: int):
    """Centre square of a JPEG, decoded at the largest DCT ratio that keeps it at least `size` pixels."""
    import tensorflow as tf

    shape = tf.image.extract_jpeg_shape(data)
    height, width = shape[0], shape[1]
    y, x, side = _centre_window(height, width)
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

    return tf.switch_case(index, [branch(r) for r in _RATIOS])


def _decode_other_centre(data):
    """Centre square of a PNG, GIF (first frame) or BMP."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    shape = tf.shape(image)
    y, x, side = _centre_window(shape[0], shape[1])
    return image[y : y + side, x : x + side]


def decode_rgb(data):
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string tensor) → uint8 RGB (H, W, 3); grayscale is expanded."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def preprocess_bytes(data, size: int):
    """One encoded image → float32 (size, size, 3) RGB in [0, 255], exactly as the evaluation pipeline."""
    import tensorflow as tf

    image = tf.cond(tf.io.is_jpeg(data), lambda: _decode_jpeg_centre(data, size), lambda: _decode_other_centre(data))
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


def decode_batch(encoded, size: int):
    """A batch of encoded images (string tensor of shape (B,)) → float32 (B, size, size, 3) in [0, 255]."""
    import tensorflow as tf

    return tf.map_fn(
        lambda data: preprocess_bytes(data, size),
        encoded,
        fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32),
    )


def load_files(paths, size: int):
    """Read image files into a float32 (N, size, size, 3) NumPy array through the same ops."""
    import numpy as np
    import tensorflow as tf

    if not paths:
        return np.zeros((0, size, size, 3), np.float32)
    encoded = tf.constant([tf.io.read_file(str(p)).numpy() for p in paths])
    return decode_batch(encoded, size).numpy()
