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

    `block` names a block builder in `workbench.models.builder.BLOCKS` ("mbconv", or EfficientNetV2's
    "fused_mbconv", whose expansion is a full k×k convolution instead of 1×1 + depthwise). `se_ratio` is the squeeze-and-excitation width relative to the block's
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
    """The per-channel map the model applies to its RGB input in [0, 255]: (x − mean) / std.

    `as_weights`: the statistics are the `normalization` layer's (non-trainable) weights, as in
    keras.applications' EfficientNet, whose files and parameter counts include them; False: they
    are constants of the layer's config, as in keras.applications' EfficientNetV2 (no weights).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    as_weights: bool = True

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
    # Scaled filters never round below this fraction of the target (EfficientNet's reference code);
    # None: plain nearest multiple of 8, as EfficientNetV2's code does (it differs for B3v2's 16 · 1.2).
    filters_floor: float | None = 0.9


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

    The last three fields are layer details that keras.applications' implementations differ in, kept
    so the official weight files load by name and training behaves as theirs: BatchNormalization
    momentum, stride-2 padding (`explicit_padding`: a ZeroPadding2D + "valid" pair named `*_pad`, as
    V1's `correct_pad`; False: "same", as V2, the same pixels without the extra layer), and the name
    role of the depthwise convolution in MBConv blocks (V1 `dwconv`, V2 `dwconv2`).
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
    bn_momentum: float = 0.99
    explicit_padding: bool = True
    depthwise_name: str = "dwconv"

    def variant(self, name: str) -> NamedVariant | None:
        return next((v for v in self.variants if v.name == name), None)
