"""EfficientNet (Tan & Le, ICML 2019): the B0 stage table, the paper's compound scaling, B0–B7.

Registered in `workbench.models.registry`. `params` are keras.applications' counts (1000-class
top); `macs` are measured by `workbench.models.flops.count_macs` at each variant's resolution.
"""

from __future__ import annotations

from workbench.models.family import Family, NamedVariant, Normalization, Stage
from workbench.models.scaling import PAPER_FAMILY
from workbench.models.weights import KerasApplicationsFile

# EfficientNet-B0 (paper, Table 1). Stem: 3×3 conv, 32 filters, stride 2. Head: 1×1 conv, 1280.
B0_STAGES: tuple[Stage, ...] = (
    Stage(kernel_size=3, repeats=1, filters_in=32, filters_out=16, expand_ratio=1, strides=1),
    Stage(kernel_size=3, repeats=2, filters_in=16, filters_out=24, expand_ratio=6, strides=2),
    Stage(kernel_size=5, repeats=2, filters_in=24, filters_out=40, expand_ratio=6, strides=2),
    Stage(kernel_size=3, repeats=3, filters_in=40, filters_out=80, expand_ratio=6, strides=2),
    Stage(kernel_size=5, repeats=3, filters_in=80, filters_out=112, expand_ratio=6, strides=1),
    Stage(kernel_size=5, repeats=4, filters_in=112, filters_out=192, expand_ratio=6, strides=2),
    Stage(kernel_size=3, repeats=1, filters_in=192, filters_out=320, expand_ratio=6, strides=1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# The statistics the official B weights were trained with (ImageNet, RGB in [0, 1]).
IMAGENET_NORMALIZATION = Normalization.from_unit_range(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _keras_file(model_name: str, top_hash: str, notop_hash: str) -> KerasApplicationsFile:
    return KerasApplicationsFile(model_name=model_name, top_hash=top_hash, notop_hash=notop_hash)


# Published B0–B7 (width, depth, resolution, dropout), with the top-1 ImageNet accuracy the paper
# reports (Table 2) in a comment; weight files and MD5 hashes are keras.applications' own.
_VARIANTS = (
    NamedVariant(  # 77.1%
        "b0", 1.0, 1.0, 224, 0.2, params=5_330_571, macs=385_814_752, phi=0.0,
        weights=_keras_file("efficientnetb0", "902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    ),
    NamedVariant(  # 79.1%
        "b1", 1.0, 1.1, 240, 0.2, params=7_856_239, macs=686_802_832, phi=1.0,
        weights=_keras_file("efficientnetb1", "1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    ),
    NamedVariant(  # 80.1%
        "b2", 1.1, 1.2, 260, 0.3, params=9_177_569, macs=993_561_872, phi=2.0,
        weights=_keras_file("efficientnetb2", "b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    ),
    NamedVariant(  # 81.6%
        "b3", 1.2, 1.4, 300, 0.3, params=12_320_535, macs=1_827_141_392, phi=3.0,
        weights=_keras_file("efficientnetb3", "ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    ),
    NamedVariant(  # 82.9%
        "b4", 1.4, 1.8, 380, 0.4, params=19_466_823, macs=4_393_771_024, phi=4.0,
        weights=_keras_file("efficientnetb4", "18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    ),
    NamedVariant(  # 83.6%
        "b5", 1.6, 2.2, 456, 0.4, params=30_562_527, macs=10_266_384_752, phi=5.0,
        weights=_keras_file("efficientnetb5", "ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    ),
    NamedVariant(  # 84.0%
        "b6", 1.8, 2.6, 528, 0.5, params=43_265_143, macs=19_067_593_536, phi=6.0,
        weights=_keras_file("efficientnetb6", "165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    ),
    NamedVariant(  # 84.3%
        "b7", 2.0, 3.1, 600, 0.5, params=66_658_687, macs=37_745_884_192, phi=7.0,
        weights=_keras_file("efficientnetb7", "8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
    ),
)  # fmt: skip

EFFICIENTNET = Family(
    name=PAPER_FAMILY.name,
    description="EfficientNet B0–B7 (Tan & Le, 2019): swish, squeeze-and-excitation, ImageNet mean/std",
    stages=B0_STAGES,
    stem_filters=STEM_FILTERS,
    head_filters=HEAD_FILTERS,
    activation="swish",
    normalization=IMAGENET_NORMALIZATION,
    variants=_VARIANTS,
    scaling=PAPER_FAMILY,
)
