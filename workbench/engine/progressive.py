"""Progressive learning (EfficientNetV2, Tan & Le 2021, section 4): small images and weak regularisation
first, the target size and full regularisation last.

A phase trained progressively is cut into `stages` runs of consecutive epochs. Stage i of M trains at

    size_i = size_0 + (target - size_0) * i / (M - 1)        (size_0 = start * target, a multiple of 8)
    reg_i  = reg_min + (reg_max - reg_min) * i / (M - 1)

for each regularisation: RandAugment magnitude, MixUp alpha and (with `recipe.progressive_dropout`) the
classifier's dropout. `reg_max` is what the run asked for (the augmentation preset and the head's dropout);
`reg_min` is a third of it (the paper's RandAugment 5 -> 15 and dropout 0.1 -> 0.3), and no MixUp at all (its
alpha grows from 0, as in the paper). Early epochs on small images cost a fraction of full-size ones, and the
paper's point is that weak regularisation suits small images: a network that sees less needs less of it.

RandAugment and MixUp live in the input pipeline, so growing them is free. Dropout is read when Keras traces the
training step, so growing it traces the step again at every stage (18 s for B0v2 on 2 idle CPU cores): it is an
option. The image size costs no trace: the stages' data leave it unknown (`phases._any_image_size`).

Validation always runs at the target size, so the best epoch is chosen on what the model will serve, and the
last stage ends at the target size, where BatchNorm's statistics settle for serving.
"""

from __future__ import annotations

import dataclasses

from pipelines.augment import AugmentPreset

MIN_REGULARISATION = 1 / 3  # the first stage's RandAugment magnitude and dropout, as a fraction of the run's
SIZE_MULTIPLE = 8  # stage sizes are multiples of this (whole feature maps at the stride-8 stages)
MIN_SIZE = 32  # the smallest stage size: the network's total stride


@dataclasses.dataclass(frozen=True)
class Stage:
    """Epochs `first`..`end - 1` (0-based, as Keras counts) at `image_size`, with this regularisation."""

    index: int
    first: int
    end: int
    image_size: int
    rand_augment_factor: float
    mixup_alpha: float
    dropout: float

    def preset(self, base: AugmentPreset) -> AugmentPreset:
        """`base` at this stage's strength (crop and flip unchanged). MixUp/CutMix start once alpha is above 0:
        Beta(0, 0) is not a distribution."""
        return dataclasses.replace(
            base,
            name=f"{base.name} (stage {self.index + 1})",
            rand_augment_factor=self.rand_augment_factor,
            mixup_alpha=self.mixup_alpha,
            mix=base.mix and self.mixup_alpha > 0,
        )

    def describe(self) -> dict:
        """The event fields of this stage (epochs counted from 1, as every event counts them)."""
        return {
            "stage": self.index + 1,
            "first_epoch": self.first + 1,
            "last_epoch": self.end,
            "image_size": self.image_size,
            "rand_augment_factor": round(self.rand_augment_factor, 4),
            "mixup_alpha": round(self.mixup_alpha, 4),
            "dropout": round(self.dropout, 4),
        }


def schedule(
    epochs: int, target_size: int, preset: AugmentPreset, dropout: float, *, stages: int = 4, start: float = 0.5
) -> list[Stage]:
    """The stages of a progressive phase of `epochs` epochs that ends at `target_size` with the full `preset`
    and `dropout`. Fewer epochs than stages give one stage per epoch; `stages=1` (or `start=1`) is plain
    fixed-size training at full regularisation."""
    if epochs < 1:
        return []
    if stages < 1 or not 0 < start <= 1:
        raise ValueError(f"progressive stages={stages} must be at least 1 and start={start} in (0, 1]")
    count = min(stages, epochs)
    first_size = min(target_size, max(MIN_SIZE, round(start * target_size / SIZE_MULTIPLE) * SIZE_MULTIPLE))
    mix_alpha = preset.mixup_alpha if preset.mix else 0.0
    result = []
    for i in range(count):
        t = i / (count - 1) if count > 1 else 1.0
        size = target_size if i == count - 1 else _round_size(first_size + (target_size - first_size) * t)
        result.append(
            Stage(
                index=i,
                first=round(epochs * i / count),
                end=round(epochs * (i + 1) / count),
                image_size=size,
                rand_augment_factor=_grow(
                    preset.rand_augment_factor * MIN_REGULARISATION, preset.rand_augment_factor, t
                ),
                mixup_alpha=_grow(0.0, mix_alpha, t),
                dropout=_grow(dropout * MIN_REGULARISATION, dropout, t),
            )
        )
    return result


def _grow(low: float, high: float, t: float) -> float:
    return low + (high - low) * t


def _round_size(size: float) -> int:
    return max(MIN_SIZE, round(size / SIZE_MULTIPLE) * SIZE_MULTIPLE)
