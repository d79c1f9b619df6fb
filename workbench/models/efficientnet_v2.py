"""EfficientNetV2 (Tan & Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021).

Fused-MBConv stages first (a full k×k conv instead of 1×1 + depthwise: faster on accelerators at
high resolution), MBConv with squeeze-and-excitation later, smaller expansion ratios, only 3×3
kernels. Registered in `workbench.models.registry`.

V2 is four families, not one: B0–B3 are one table scaled by (width, depth), while S, M and L are
separately designed tables (different stages, stems and input normalisation), with no rule that
grows one into another. Stage tables, rounding, normalisation and layer names are those of
keras.applications' `efficientnet_v2.py` (itself from google/automl `efficientnetv2/effnetv2_configs.py`),
so its ImageNet files load by name. `params` are keras.applications' counts (1000-class top);
`macs` are measured by `workbench.models.flops.count_macs` at each variant's resolution.

| variant | res | params      | GMACs (ours) | paper "FLOPs" | top-1 (paper) |
|---------|-----|-------------|--------------|---------------|---------------|
| b0v2    | 224 |   7,200,312 |  0.718       | 0.72 B        | 78.7%         |
| b1v2    | 240 |   8,212,124 |  1.197       | 1.2 B         | 79.8%         |
| b2v2    | 260 |  10,178,374 |  1.698       | 1.7 B         | 80.5%         |
| b3v2    | 300 |  14,467,622 |  3.011       | 3.0 B         | 82.1%         |
| sv2     | 384 |  21,612,360 |  8.366       | 8.8 B         | 83.9%         |
| mv2     | 480 |  54,431,388 | 24.582       | 24 B          | 85.1%         |
| lv2     | 480 | 119,027,848 | 56.080       | 53 B          | 85.7%         |

The paper's "FLOPs" (Table 7; the automl README for B0–B3) are multiply-adds, like ours. B0–B3 and
M agree within 1%; S comes out 5% under the paper and L 6% over. We have not traced those two: the
graphs are keras.applications' (every weighted layer's name and shape matches), and ours count
convolutions and dense layers only (no BN, activations, pooling or SE multiplies).
"""

from __future__ import annotations

from workbench.models.family import Family, NamedVariant, Normalization, ScalingRules, Stage
from workbench.models.weights import KerasApplicationsFile

# keras.applications' download location for the V2 files (efficientnet_v2.py: BASE_WEIGHTS_PATH).
KERAS_V2_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"

# B variants keep V1's ImageNet statistics; S, M and L map [0, 255] to [-1, 1] (keras.applications'
# Rescaling(1/128, offset=-1)). Both as layer constants: keras.applications' V2 holds no weights for them.
IMAGENET = Normalization.from_unit_range(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
IMAGENET_CONSTANTS = Normalization(IMAGENET.mean, IMAGENET.std, as_weights=False)
MINUS_ONE_TO_ONE = Normalization(mean=(128.0,) * 3, std=(128.0,) * 3, as_weights=False)


def _fused(repeats: int, filters_in: int, filters_out: int, expand_ratio: int, strides: int) -> Stage:
    """A Fused-MBConv stage: 3×3, no squeeze-and-excitation (as every fused stage in the paper)."""
    return Stage(3, repeats, filters_in, filters_out, expand_ratio, strides, se_ratio=None, block="fused_mbconv")


def _mbconv(repeats: int, filters_in: int, filters_out: int, expand_ratio: int, strides: int) -> Stage:
    """An MBConv stage: 3×3 depthwise, squeeze-and-excitation 0.25."""
    return Stage(3, repeats, filters_in, filters_out, expand_ratio, strides, se_ratio=0.25, block="mbconv")


# Stages: (repeats, filters in, filters out, expand ratio, stride).
BASE_STAGES = (  # the B0 table that B1–B3 scale
    _fused(1, 32, 16, 1, 1),
    _fused(2, 16, 32, 4, 2),
    _fused(2, 32, 48, 4, 2),
    _mbconv(3, 48, 96, 4, 2),
    _mbconv(5, 96, 112, 6, 1),
    _mbconv(8, 112, 192, 6, 2),
)
S_STAGES = (  # paper, Table 4
    _fused(2, 24, 24, 1, 1),
    _fused(4, 24, 48, 4, 2),
    _fused(4, 48, 64, 4, 2),
    _mbconv(6, 64, 128, 4, 2),
    _mbconv(9, 128, 160, 6, 1),
    _mbconv(15, 160, 256, 6, 2),
)
M_STAGES = (
    _fused(3, 24, 24, 1, 1),
    _fused(5, 24, 48, 4, 2),
    _fused(5, 48, 80, 4, 2),
    _mbconv(7, 80, 160, 4, 2),
    _mbconv(14, 160, 176, 6, 1),
    _mbconv(18, 176, 304, 6, 2),
    _mbconv(5, 304, 512, 6, 1),
)
L_STAGES = (
    _fused(4, 32, 32, 1, 1),
    _fused(7, 32, 64, 4, 2),
    _fused(7, 64, 96, 4, 2),
    _mbconv(10, 96, 192, 4, 2),
    _mbconv(19, 192, 224, 6, 1),
    _mbconv(25, 224, 384, 6, 2),
    _mbconv(7, 384, 640, 6, 1),
)
HEAD_FILTERS = 1280


def _keras_file(suffix: str, top_hash: str, notop_hash: str) -> KerasApplicationsFile:
    """keras.applications' files `efficientnetv2-<suffix>.h5` / `_notop.h5` and their MD5 hashes."""
    return KerasApplicationsFile(f"efficientnetv2-{suffix}", top_hash, notop_hash, url=KERAS_V2_WEIGHTS_URL)


def _family(name: str, description: str, stages: tuple[Stage, ...], normalization: Normalization, variants) -> Family:
    return Family(
        name=name,
        description=description,
        stages=stages,
        stem_filters=stages[0].filters_in,  # V2's stem is as wide as the first stage's input
        head_filters=HEAD_FILTERS,
        activation="swish",
        normalization=normalization,
        rules=ScalingRules(filters_floor=None),
        variants=variants,
        bn_momentum=0.9,
        explicit_padding=False,
        depthwise_name="dwconv2",
    )


# (width, depth, resolution, dropout): resolution is keras.applications' default input size (the
# paper's evaluation size); the head dropout is the paper's (effnetv2_configs.py), a training default
# only. Top-1 ImageNet accuracy in the comments (paper Table 7, automl README for B0–B3).
EFFICIENTNET_V2 = _family(
    "efficientnetv2",
    "EfficientNetV2 B0–B3 (Tan & Le, 2021): Fused-MBConv early stages, swish, ImageNet mean/std",
    BASE_STAGES,
    IMAGENET_CONSTANTS,
    (
        NamedVariant(  # 78.7%
            "b0v2", 1.0, 1.0, 224, 0.2, params=7_200_312, macs=718_086_176,
            weights=_keras_file("b0", "21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
        ),
        NamedVariant(  # 79.8%
            "b1v2", 1.0, 1.1, 240, 0.2, params=8_212_124, macs=1_196_819_360,
            weights=_keras_file("b1", "069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37"),
        ),
        NamedVariant(  # 80.5%
            "b2v2", 1.1, 1.2, 260, 0.3, params=10_178_374, macs=1_697_542_832,
            weights=_keras_file("b2", "424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb"),
        ),
        NamedVariant(  # 82.1%
            "b3v2", 1.2, 1.4, 300, 0.3, params=14_467_622, macs=3_011_458_816,
            weights=_keras_file("b3", "1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856"),
        ),
    ),
)  # fmt: skip
EFFICIENTNET_V2_S = _family(
    "efficientnetv2-s",
    "EfficientNetV2-S (2021): 6 stages, 3 of them Fused-MBConv, inputs to [-1, 1]",
    S_STAGES,
    MINUS_ONE_TO_ONE,
    (
        NamedVariant(  # 83.9%
            "sv2", 1.0, 1.0, 384, 0.2, params=21_612_360, macs=8_365_617_152,
            weights=_keras_file("s", "e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
        ),
    ),
)  # fmt: skip
EFFICIENTNET_V2_M = _family(
    "efficientnetv2-m",
    "EfficientNetV2-M (2021): 7 stages, 3 of them Fused-MBConv, inputs to [-1, 1]",
    M_STAGES,
    MINUS_ONE_TO_ONE,
    (
        NamedVariant(  # 85.1%
            "mv2", 1.0, 1.0, 480, 0.3, params=54_431_388, macs=24_582_460_384,
            weights=_keras_file("m", "a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342"),
        ),
    ),
)  # fmt: skip
EFFICIENTNET_V2_L = _family(
    "efficientnetv2-l",
    "EfficientNetV2-L (2021): 7 stages, 3 of them Fused-MBConv, inputs to [-1, 1]",
    L_STAGES,
    MINUS_ONE_TO_ONE,
    (
        NamedVariant(  # 85.7%
            "lv2", 1.0, 1.0, 480, 0.4, params=119_027_848, macs=56_079_699_008,
            weights=_keras_file("l", "27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615"),
        ),
    ),
)  # fmt: skip

# Registered in this order; `workbench variants` lists them after V1 and Lite.
EFFICIENTNET_V2_FAMILIES = (EFFICIENTNET_V2, EFFICIENTNET_V2_S, EFFICIENTNET_V2_M, EFFICIENTNET_V2_L)
