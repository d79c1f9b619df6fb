"""A model family as data: its stage table, stem and head rules, activation, normalisation,
and its named variants (rows of scaling coefficients, each with its weight source).

The builder (`workbench.models.builder`) reads only these fields, so a family differs from
another in data, never in `if family == ...` branches. Families are registered in
`workbench.models.registry`; each lives in its own module (`efficientnet.py`,
`efficientnet_lite.py`). Plain Python: importing this module imports no Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.models.scaling import ScalingFamily

if TYPE_CHECKING:  # the weight sources live with the loaders, which need numpy
    from workbench.models.weights import WeightSource


@dataclass(frozen=True)
class Stage:
    """One stage of blocks: the first block may stride and change width, the others repeat it.

    `block` names a block builder in `workbench.models.builder.BLOCKS` ("mbconv"; EfficientNetV2
    adds "fused_mbconv"). `se_ratio` is the squeeze-and-excitation width relative to the block's
    input filters, None for no squeeze-and-excitation.
    """

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float | None = 0.25
    block: str = "mbconv"


@dataclass(frozen=True)
class Normalization:
    """The per-channel map the model applies to its RGB input in [0, 255]: (x − mean) / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_unit_range(cls, mean: tuple[float, ...], std: tuple[float, ...]) -> Normalization:
        """Statistics quoted for RGB in [0, 1] (as ImageNet's usually are), moved to the [0, 255] input."""
        return cls(tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std))

    def variance(self) -> tuple[float, ...]:
        return tuple(s**2 for s in self.std)


@dataclass(frozen=True)
class ScalingRules:
    """Which parts of the network width and depth scaling reach.

    EfficientNet scales everything. EfficientNet-Lite keeps the stem, the head and the repeats
    of its first and last stages fixed (efficientnet_lite_builder.py), which keeps small
    variants small and quantisation-friendly.
    """

    scale_stem: bool = True
    scale_head: bool = True
    fixed_repeats: tuple[int, ...] = ()  # stage indices (from 0) whose repeats stay as in the table


@dataclass(frozen=True)
class NamedVariant:
    """A published member of a family: its scaling coefficients and what is known about it.

    `params` (with a 1000-class top) and `macs` (multiply-accumulates per image at `resolution`)
    are measured on the built graph and kept here as data, so listing the family builds nothing;
    tests/test_models_figures.py rebuilds the graphs and checks they still hold.
    """

    name: str
    width: float
    depth: float
    resolution: int  # pixels
    dropout: float
    params: int
    macs: int
    phi: float | None = None
    weights: WeightSource | None = None  # where weights="imagenet" comes from; None: there are none


@dataclass(frozen=True)
class Family:
    """Everything the builder needs about a family, plus its named variants.

    `scaling` is the compound-scaling rule that `<name>:phi=<float>` (and, for the paper's family,
    plain `phi=<float>`) grows the base with; None when the family has only its named variants.
    """

    name: str
    description: str
    stages: tuple[Stage, ...]
    stem_filters: int
    head_filters: int
    activation: str
    normalization: Normalization
    rules: ScalingRules = ScalingRules()
    variants: tuple[NamedVariant, ...] = ()
    scaling: ScalingFamily | None = None

    def variant(self, name: str) -> NamedVariant | None:
        return next((v for v in self.variants if v.name == name), None)
