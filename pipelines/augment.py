"""Augmentation presets `none | light | standard | strong | autoaugment`, applied to training images only.

Random-resized crop and the horizontal flip happen per image while decoding (see `dataset.py`: decoding only
the crop window is much cheaper than decoding then cropping, and a per-image flip is nearly free where Keras'
RandomFlip on a batch is not). The batch-level part is built from Keras 3 layers, which are safe inside tf.data:
RandAugment, MixUp and CutMix. Keras 3.15 has all of them, so keras-cv is not needed. On a batch, Keras'
RandAugment draws which operations to apply once per batch (their strengths per image); MixUp and CutMix pair
images within the batch and mix their one-hot labels into soft labels that still sum to 1. The `autoaugment`
preset applies the published AutoAugment policy per image, after the crop (`pipelines.autoaugment`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AugmentPreset:
    """What a preset does. crop_scale: area range of the random-resized crop (None: the evaluation centre crop)."""

    name: str
    crop_scale: tuple[float, float] | None
    flip: bool = False
    rand_augment_ops: int = 0
    rand_augment_factor: float = 0.0
    mix: bool = False  # MixUp or CutMix (one of the two per batch, chosen at random): soft labels
    mixup_alpha: float = 0.2
    cutmix_factor: float = 1.0
    autoaugment: bool = False  # the published ImageNet AutoAugment policy, per image (pipelines/autoaugment.py)


AUGMENT_PRESETS: dict[str, AugmentPreset] = {
    "none": AugmentPreset("none", crop_scale=None),
    "light": AugmentPreset("light", crop_scale=(0.5, 1.0), flip=True),
    # The crop and RandAugment magnitudes follow the EfficientNet recipe, scaled down for small datasets.
    "standard": AugmentPreset(
        "standard", crop_scale=(0.25, 1.0), flip=True, rand_augment_ops=2, rand_augment_factor=0.3
    ),
    "strong": AugmentPreset(
        "strong", crop_scale=(0.08, 1.0), flip=True, rand_augment_ops=2, rand_augment_factor=0.5, mix=True
    ),
    # AutoAugment replaces RandAugment (the paper applies it after the crop and flip); the crop as in standard.
    "autoaugment": AugmentPreset("autoaugment", crop_scale=(0.25, 1.0), flip=True, autoaugment=True),
}


# A learned policy (`workbench search --space augment`) is named by its numbers, so a run's config.yaml and a
# recipe file hold it as one string: "randaugment:N,M,S" = the standard crop and flip, RandAugment with N
# operations of strength M (Keras' factor, 0..1), and MixUp/CutMix of strength S (0 = off).
POLICY_PREFIX = "randaugment:"


def policy_name(ops: int, magnitude: float, mix: float) -> str:
    """The preset name of a learned RandAugment + MixUp/CutMix policy (see POLICY_PREFIX)."""
    return f"{POLICY_PREFIX}{int(ops)},{round(float(magnitude), 3):g},{round(float(mix), 3):g}"


def parse_policy(name: str) -> AugmentPreset:
    """The preset a `randaugment:N,M,S` name describes; ValueError naming the problem otherwise."""
    fields = name[len(POLICY_PREFIX) :].split(",")
    try:
        ops, magnitude, mix = int(fields[0]), float(fields[1]), float(fields[2])
        if len(fields) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(
            f"augmentation policy {name!r} must be {POLICY_PREFIX}N,M,S (N operations 0-5, strength M and "
            "mix strength S in [0, 1]), e.g. randaugment:2,0.4,0.2"
        ) from None
    if not (0 <= ops <= 5 and 0 <= magnitude <= 1 and 0 <= mix <= 1):
        raise ValueError(f"augmentation policy {name!r}: need 0 <= N <= 5, 0 <= M <= 1 and 0 <= S <= 1")
    return AugmentPreset(
        name,
        crop_scale=AUGMENT_PRESETS["standard"].crop_scale,
        flip=True,
        rand_augment_ops=ops,
        rand_augment_factor=magnitude,
        mix=mix > 0,
        mixup_alpha=mix,
        cutmix_factor=mix,
    )


def get_preset(name: str | AugmentPreset) -> AugmentPreset:
    """The preset called `name`; a preset passes through (progressive learning builds its own strengths)."""
    if isinstance(name, AugmentPreset):
        return name
    if isinstance(name, str) and name.startswith(POLICY_PREFIX):
        return parse_policy(name)
    try:
        return AUGMENT_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown augmentation preset {name!r}; use one of {', '.join(AUGMENT_PRESETS)} or {POLICY_PREFIX}N,M,S"
        ) from None


def batch_augmenter(preset: AugmentPreset, seed: int = 0):
    """A function (images (B,R,R,3) float32 in [0,255], labels (B,C), choice in [0, 1)) -> same, or None when
    the preset has no batch-level augmentation (RandAugment, MixUp/CutMix; choice < 0.5 picks MixUp).
    Built once per dataset so the Keras layers keep their random state across batches.
    """
    if not (preset.rand_augment_ops or preset.mix):
        return None
    import keras
    import tensorflow as tf

    rand_augment = (
        keras.layers.RandAugment(
            value_range=(0, 255), num_ops=preset.rand_augment_ops, factor=preset.rand_augment_factor, seed=seed + 1
        )
        if preset.rand_augment_ops
        else None
    )
    mixup = keras.layers.MixUp(alpha=preset.mixup_alpha, seed=seed + 2) if preset.mix else None
    cutmix = keras.layers.CutMix(factor=preset.cutmix_factor, seed=seed + 3) if preset.mix else None

    def augment(images, labels, choice):
        if rand_augment is not None:
            images = tf.clip_by_value(rand_augment(images, training=True), 0.0, 255.0)
        if mixup is not None:

            def do_mixup():
                out = mixup({"images": images, "labels": labels}, training=True)
                return out["images"], out["labels"]

            def do_cutmix():
                out = cutmix({"images": images, "labels": labels}, training=True)
                return out["images"], out["labels"]

            images, labels = tf.cond(choice < 0.5, do_mixup, do_cutmix)
        return tf.cast(images, tf.float32), tf.cast(labels, tf.float32)

    return augment
