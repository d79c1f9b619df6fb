"""AutoAugment (Cubuk et al. 2019): the published ImageNet policy, applied per training image.

The policy is data: `IMAGENET_POLICY` holds its 25 sub-policies, each two `(operation, probability, magnitude)`
steps. For every image one sub-policy is drawn uniformly; each of its two steps is applied with its
probability. Magnitudes are the paper's levels 0..9, mapped linearly onto the ranges of its appendix
(level 9 = the far end: rotate 30°, shear 0.3, posterize to 4 bits, solarize every pixel, enhance by ±90%);
rotate, shear and the enhancements pick their sign at random, as the reference implementations do.

Everything here is plain TensorFlow on one float32 image in [0, 255] (H, W, 3), stateless-seeded, so it runs
inside tf.data after the pipelines' caches (the cached images stay un-augmented; each epoch draws anew).
keras-cv 0.9 has some of these operations as layers (Posterization, Solarization, Equalization, RandomShear),
but as batch layers that draw their strength from a range per call; the policy needs a fixed magnitude per
step and per image, and the ten operations it uses are each a few lines of tf.image-level code, so importing
keras-cv (seconds at start-up) would add nothing here.
"""

from __future__ import annotations

import math

LEVELS = 10  # magnitudes are integers 0..9
FILL = 128.0  # grey where a geometric operation uncovers the canvas (the TPU reference's choice)

# The paper's "ImageNet policy" (appendix, Table 9): 5 policies x 5 sub-policies.
IMAGENET_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

# The far end of each magnitude range (level 9); operations without a magnitude ignore it.
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_ENHANCE = 0.9  # Color, Contrast, Sharpness: factor 1 ± 0.9
MAX_POSTERIZE_DROP = 4  # bits removed of 8


def level_fraction(level: int) -> float:
    """Level 0..9 as a fraction of the range: 0 -> 0, 9 -> 1."""
    return level / (LEVELS - 1)


def posterize_bits(level: int) -> int:
    """Bits kept by Posterize at `level`: 8 at level 0, 4 at level 9."""
    return 8 - round(MAX_POSTERIZE_DROP * level_fraction(level))


def solarize_threshold(level: int) -> float:
    """Pixels at or above this are inverted: 256 (none) at level 0, 0 (all) at level 9."""
    return 256.0 * (1.0 - level_fraction(level))


# ---------------------------------------------------------------------------------------------- operations
# Each takes an image (H, W, 3) float32 in [0, 255], the level fraction in [0, 1] and a sign (±1.0) as tensors.
def autocontrast(image, fraction, sign):
    """Stretch each channel to the full [0, 255] range (a constant channel stays as it is)."""
    import tensorflow as tf

    lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    stretched = (image - lo) * (255.0 / tf.maximum(hi - lo, 1e-3))
    return tf.where(hi > lo, stretched, image)


def equalize(image, fraction, sign):
    """Histogram equalisation per channel, PIL's algorithm (the last occupied bin does not count)."""
    import tensorflow as tf

    def channel(values):
        pixels = tf.cast(tf.clip_by_value(tf.round(values), 0, 255), tf.int32)
        hist = tf.math.bincount(tf.reshape(pixels, [-1]), minlength=256, maxlength=256)
        nonzero = tf.boolean_mask(hist, hist > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

        def mapped():
            lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
            lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
            return tf.cast(tf.gather(lut, pixels), tf.float32)

        return tf.cond(step > 0, mapped, lambda: values)

    return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image, fraction, sign):
    return 255.0 - image


def posterize(image, fraction, sign):
    """Keep the top 8 - 4·fraction bits of every pixel (rounded like `posterize_bits`)."""
    import tensorflow as tf

    shift = tf.cast(tf.round(MAX_POSTERIZE_DROP * fraction), tf.int32)
    pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.float32)


def solarize(image, fraction, sign):
    """Invert the pixels at or above 256·(1 - fraction)."""
    import tensorflow as tf

    return tf.where(image >= 256.0 * (1.0 - fraction), 255.0 - image, image)


def _grey(image):
    import tensorflow as tf

    return tf.image.rgb_to_grayscale(image)  # (H, W, 1), ITU-R 601 weights like PIL's "L"


def _blend(base, image, factor):
    """base + factor·(image - base): factor 0 gives base, 1 the image, above 1 extrapolates (PIL's ImageEnhance)."""
    import tensorflow as tf

    return tf.clip_by_value(base + factor * (image - base), 0.0, 255.0)


def _factor(fraction, sign):
    return 1.0 + sign * MAX_ENHANCE * fraction


def color(image, fraction, sign):
    """Saturation: blend with the grey version by 1 ± 0.9·fraction."""
    return _blend(_grey(image), image, _factor(fraction, sign))


def contrast(image, fraction, sign):
    """Blend with the image's mean grey level by 1 ± 0.9·fraction."""
    import tensorflow as tf

    return _blend(tf.reduce_mean(_grey(image)), image, _factor(fraction, sign))


def sharpness(image, fraction, sign):
    """Blend with PIL's smoothing filter (3x3, centre weight 5 of 13; the border stays) by 1 ± 0.9·fraction."""
    import tensorflow as tf

    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, strides=[1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    inner = tf.pad(tf.ones([h - 2, w - 2, 3]), [[1, 1], [1, 1], [0, 0]])
    smooth = inner * smooth + (1.0 - inner) * image
    return _blend(smooth, image, _factor(fraction, sign))


def _transform(image, matrix):
    """Apply the 3x3 projective `matrix` (output -> input coordinates), bilinear, grey outside the image."""
    import tensorflow as tf

    flat = tf.reshape(matrix, [9])[:8] / matrix[2, 2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=flat[None],
        output_shape=tf.shape(image)[:2],
        fill_value=FILL,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return out[0]


def rotate(image, fraction, sign):
    """Rotate about the centre by ±30°·fraction."""
    import tensorflow as tf

    angle = sign * MAX_ROTATE_DEGREES * fraction * math.pi / 180.0
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) reads input R⁻¹·((x, y) - centre) + centre.
    matrix = tf.stack(
        [
            tf.stack([c, s, cx - c * cx - s * cy]),
            tf.stack([-s, c, cy + s * cx - c * cy]),
            tf.constant([0.0, 0.0, 1.0]),
        ]
    )
    return _transform(image, matrix)


def shear_x(image, fraction, sign):
    """Horizontal shear by ±0.3·fraction: output (x, y) reads input (x + shear·y, y)."""
    import tensorflow as tf

    shear = sign * MAX_SHEAR * fraction
    one, zero = tf.constant(1.0), tf.constant(0.0)
    matrix = tf.stack([tf.stack([one, shear, zero]), tf.stack([zero, one, zero]), tf.stack([zero, zero, one])])
    return _transform(image, matrix)


OPERATIONS = {
    "AutoContrast": autocontrast,
    "Color": color,
    "Contrast": contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "Rotate": rotate,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "Solarize": solarize,
}


def apply_operation(name: str, image, level: int, sign: float = 1.0):
    """One operation at a fixed level (tests and previews): `OPERATIONS[name]` with the level's fraction."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image, tf.float32)
    return OPERATIONS[name](image, tf.constant(level_fraction(level)), tf.constant(float(sign)))


def policy_tensors(policy=IMAGENET_POLICY):
    """The policy table as three (S, 2) tensors: operation index (into OPERATIONS' order), probability, fraction."""
    import tensorflow as tf

    names = list(OPERATIONS)
    ops = [[names.index(step[0]) for step in sub] for sub in policy]
    probs = [[step[1] for step in sub] for sub in policy]
    fractions = [[level_fraction(step[2]) for step in sub] for sub in policy]
    return tf.constant(ops, tf.int32), tf.constant(probs, tf.float32), tf.constant(fractions, tf.float32)


def autoaugmenter(policy=IMAGENET_POLICY):
    """`augment(image, seed) -> image`: one sub-policy drawn per image, each step applied with its probability.

    `seed` is a stateless seed (shape [2] int); the same image and seed always give the same result."""
    import tensorflow as tf

    ops, probs, fractions = policy_tensors(policy)
    branches = list(OPERATIONS.values())

    def augment(image, seed):
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
        pick = tf.random.stateless_uniform([], seeds[0], 0, len(policy), dtype=tf.int32)
        image = tf.cast(image, tf.float32)
        for step in range(2):
            op, p, fraction = ops[pick, step], probs[pick, step], fractions[pick, step]
            coin = tf.random.stateless_uniform([], seeds[1 + 2 * step])
            sign = tf.where(tf.random.stateless_uniform([], seeds[2 + 2 * step]) < 0.5, -1.0, 1.0)

            def apply(op=op, fraction=fraction, sign=sign, image=image):
                cases = [lambda f=f: f(image, fraction, sign) for f in branches]
                return tf.switch_case(op, cases)

            shape = image.shape
            image = tf.cond(coin < p, apply, lambda image=image: image)
            image = tf.clip_by_value(image, 0.0, 255.0)
            image.set_shape(shape)
        return image

    return augment
