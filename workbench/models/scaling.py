"""Compound scaling, as defined by Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks" (ICML 2019), section 3.3.

For a compound coefficient φ the network is scaled by

    depth      d = α^φ
    width      w = β^φ
    resolution r = γ^φ        with α·β²·γ² ≈ 2, so FLOPs grow by about 2^φ,

and the paper's grid search on ImageNet found α = 1.2, β = 1.1, γ = 1.15.
These are pure functions: no Keras, no state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 1.2  # depth
BETA = 1.1  # width
GAMMA = 1.15  # resolution
BASE_RESOLUTION = 224  # B0's input size in pixels
RESOLUTION_MULTIPLE = 8  # custom resolutions are rounded to a multiple of this


def round_filters(filters: int, width: float, divisor: int = 8, floor: float | None = 0.9) -> int:
    """Channels after width scaling, rounded to a multiple of `divisor`.

    Rounds to the nearest multiple, but never below `floor` × the scaled target, as EfficientNet's
    reference implementation does (it keeps small layers from losing capacity); EfficientNetV2's
    code has no floor (`floor=None`).
    """
    target = filters * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if floor is not None and rounded < floor * target:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks in a stage after depth scaling: always rounded up, so no stage vanishes."""
    return math.ceil(depth * repeats)


def round_resolution(pixels: float, multiple: int = RESOLUTION_MULTIPLE) -> int:
    """Nearest multiple of `multiple` (at least one multiple)."""
    return max(multiple, round(pixels / multiple) * multiple)


@dataclass(frozen=True)
class ScalingFamily:
    """A base network plus the per-φ multipliers (α, β, γ) that grow it.

    The paper's family is B0 scaled by (1.2, 1.1, 1.15). A scale search may find other
    multipliers, or start from a scaled-down base (`base_width`, `base_depth`,
    `base_resolution` describe that base relative to B0).
    """

    name: str
    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    base_width: float = 1.0
    base_depth: float = 1.0
    base_resolution: int = BASE_RESOLUTION

    def coefficients(self, phi: float) -> tuple[float, float, int]:
        """(width, depth, resolution in pixels) at compound coefficient φ."""
        width = self.base_width * self.beta**phi
        depth = self.base_depth * self.alpha**phi
        resolution = round_resolution(self.base_resolution * self.gamma**phi)
        return width, depth, resolution

    def flops_factor(self) -> float:
        """α·β²·γ²: how much FLOPs grow per unit of φ (the paper constrains it to ≈ 2)."""
        return self.alpha * self.beta**2 * self.gamma**2


PAPER_FAMILY = ScalingFamily(name="efficientnet")


def dropout_for_phi(phi: float) -> float:
    """Head dropout for a custom φ, interpolating the published B0..B7 values (0.2 → 0.5)."""
    return float(min(0.5, max(0.2, 0.2 + 0.05 * phi)))
