"""One generic EfficientNet builder; every variant is a `VariantSpec`, every family is data.

The builder reads the family (`spec.architecture`: stage table, block types, stem and head
rules, activation, normalisation) and never asks which family it is building.

Layer names follow `keras.applications.efficientnet` exactly (`stem_conv`,
`block{stage}{letter}_{role}`, `top_conv`, `avg_pool`, `top_dropout`, `predictions`) so
the official ImageNet weight files load by name. Only `keras.layers` and `keras.ops` are
used, so the same model runs on the TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from workbench.models.family import Family
from workbench.models.registry import get_variant
from workbench.models.scaling import round_filters, round_repeats
from workbench.models.variants import VariantSpec

# He-style init for convolutions and a small uniform init for the classifier, as in the paper's code.
CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
DENSE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}

HEAD_LAYERS = ("avg_pool", "top_dropout", "predictions")
NORMALIZATION_LAYER = "normalization"


def _normalization_layer(spec: VariantSpec) -> layers.Normalization:
    """The first layer: the family's statistics as weights (filled by `_set_normalization` once the
    model is built) or as constants of the layer's config."""
    normalization = spec.architecture.normalization
    if normalization.as_weights:
        return layers.Normalization(axis=-1, name=NORMALIZATION_LAYER)
    return layers.Normalization(
        axis=-1, mean=list(normalization.mean), variance=list(normalization.variance()), name=NORMALIZATION_LAYER
    )


def _set_normalization(model: keras.Model, spec: VariantSpec) -> None:
    """Fill the `normalization` layer with the family's statistics on the [0, 255] scale (kept as
    weights, like keras.applications, so parameter counts and weight files line up)."""
    import numpy as np

    normalization = spec.architecture.normalization
    if not normalization.as_weights:
        return
    layer = model.get_layer(NORMALIZATION_LAYER)
    layer.set_weights(
        [np.array(normalization.mean, "float32"), np.array(normalization.variance(), "float32"), np.array(0)]
    )
    # Normalization snapshots its statistics into constants; refresh them after assigning.
    layer.finalize_state()


def _correct_pad(x, kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zero padding that makes a stride-2 'valid' conv match TensorFlow's 'same' on even sizes.

    Same rule as keras.applications' `correct_pad`, so the official weights see the same pixels.
    """
    size = x.shape[1:3]
    adjust = (1, 1) if size[0] is None else (1 - size[0] % 2, 1 - size[1] % 2)
    half = kernel_size // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def _pad_for(x, kernel_size: int, strides: int, family: Family, name: str):
    """(input, padding) for a k×k convolution: the family's explicit pad layer before a stride-2
    'valid' conv, else 'same' (the same pixels, see `Family.explicit_padding`)."""
    if strides == 2 and family.explicit_padding:
        return layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=name)(x), "valid"
    return x, "same"


def _conv_bn(x, filters: int, kernel_size: int, *, strides: int, family: Family, name: str, role: str, bn: str):
    """Conv (no bias) → BatchNormalization, named `{name}{role}` and `{name}{bn}`."""
    x, padding = _pad_for(x, kernel_size, strides, family, f"{name}{role}_pad")
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=CONV_INIT,
        name=name + role,
    )(x)
    return layers.BatchNormalization(momentum=family.bn_momentum, name=name + bn)(x)


def _squeeze_excite(x, *, filters_in: int, se_ratio: float, family: Family, name: str):
    filters = x.shape[-1]
    filters_se = max(1, int(filters_in * se_ratio))
    se = layers.GlobalAveragePooling2D(name=name + "se_squeeze")(x)
    se = layers.Reshape((1, 1, filters), name=name + "se_reshape")(se)
    se = layers.Conv2D(
        filters_se,
        1,
        padding="same",
        activation=family.activation,
        kernel_initializer=CONV_INIT,
        name=name + "se_reduce",
    )(se)
    se = layers.Conv2D(
        filters, 1, padding="same", activation="sigmoid", kernel_initializer=CONV_INIT, name=name + "se_expand"
    )(se)
    return layers.Multiply(name=name + "se_excite")([x, se])


def _residual(x, inputs, *, strides: int, filters_in: int, filters_out: int, drop_rate: float, name: str):
    """The identity shortcut where shapes allow it. Drop-connect (stochastic depth) applies only
    there, where the residual path exists to be dropped."""
    if strides != 1 or filters_in != filters_out:
        return x
    if drop_rate > 0:
        # noise_shape drops whole examples' residual branches: stochastic depth, not dropout.
        x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
    return layers.Add(name=name + "add")([x, inputs])


def mbconv_block(
    inputs,
    *,
    name: str,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    strides: int,
    expand_ratio: int,
    se_ratio: float | None,
    family: Family,
    drop_rate: float,
):
    """Mobile inverted bottleneck (MBConv): 1×1 expansion, k×k depthwise, optional
    squeeze-and-excitation, 1×1 projection."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = _conv_bn(x, filters, 1, strides=1, family=family, name=name, role="expand_conv", bn="expand_bn")
        x = layers.Activation(family.activation, name=name + "expand_activation")(x)
    depthwise = family.depthwise_name
    x, padding = _pad_for(x, kernel_size, strides, family, f"{name}{depthwise}_pad")
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        depthwise_initializer=CONV_INIT,
        name=name + depthwise,
    )(x)
    x = layers.BatchNormalization(momentum=family.bn_momentum, name=name + "bn")(x)
    x = layers.Activation(family.activation, name=name + "activation")(x)
    if se_ratio:
        x = _squeeze_excite(x, filters_in=filters_in, se_ratio=se_ratio, family=family, name=name)
    x = _conv_bn(x, filters_out, 1, strides=1, family=family, name=name, role="project_conv", bn="project_bn")
    return _residual(
        x, inputs, strides=strides, filters_in=filters_in, filters_out=filters_out, drop_rate=drop_rate, name=name
    )


def fused_mbconv_block(
    inputs,
    *,
    name: str,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    strides: int,
    expand_ratio: int,
    se_ratio: float | None,
    family: Family,
    drop_rate: float,
):
    """Fused-MBConv (EfficientNetV2, Tan & Le 2021, Fig. 2): the 1×1 expansion and the k×k
    depthwise conv replaced by one k×k conv, which runs faster on accelerators in early stages.
    Without expansion the single k×k conv is the projection, and is followed by an activation
    (`project_activation`), as in keras.applications."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = _conv_bn(
            x, filters, kernel_size, strides=strides, family=family, name=name, role="expand_conv", bn="expand_bn"
        )
        x = layers.Activation(family.activation, name=name + "expand_activation")(x)
    if se_ratio:
        x = _squeeze_excite(x, filters_in=filters_in, se_ratio=se_ratio, family=family, name=name)
    fused = expand_ratio == 1  # the projection does the k×k work itself
    x = _conv_bn(
        x,
        filters_out,
        kernel_size if fused else 1,
        strides=strides if fused else 1,
        family=family,
        name=name,
        role="project_conv",
        bn="project_bn",
    )
    if fused:
        x = layers.Activation(family.activation, name=name + "project_activation")(x)
    return _residual(
        x, inputs, strides=strides, filters_in=filters_in, filters_out=filters_out, drop_rate=drop_rate, name=name
    )


# Block builders by `Stage.block`: a new block type is one function here and one entry.
BLOCKS = {"mbconv": mbconv_block, "fused_mbconv": fused_mbconv_block}


def _round_filters(filters: int, spec: VariantSpec) -> int:
    return round_filters(filters, spec.width, floor=spec.architecture.rules.filters_floor)


def stage_plan(spec: VariantSpec) -> list[dict]:
    """The scaled blocks in order: one dict of block-builder arguments (minus the family and the
    drop rate) per block, with the builder's name under "block"."""
    family = spec.architecture
    plan = []
    for stage_index, stage in enumerate(family.stages):
        fixed = stage_index in family.rules.fixed_repeats
        repeats = stage.repeats if fixed else round_repeats(stage.repeats, spec.depth)
        filters_in = _round_filters(stage.filters_in, spec)
        filters_out = _round_filters(stage.filters_out, spec)
        for j in range(repeats):
            plan.append(
                dict(
                    block=stage.block,
                    name=f"block{stage_index + 1}{chr(ord('a') + j)}_",
                    filters_in=filters_in if j == 0 else filters_out,
                    filters_out=filters_out,
                    kernel_size=stage.kernel_size,
                    strides=stage.strides if j == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                )
            )
    return plan


def _block_builder(name: str):
    if name not in BLOCKS:
        raise ValueError(f"unknown block type {name!r} in the family's stage table; known: {', '.join(BLOCKS)}")
    return BLOCKS[name]


def build_model(
    variant: str | VariantSpec | None = None,
    num_classes: int = 1000,
    *,
    weights: str | None = None,
    input_shape: Sequence[int | None] | None = None,
    dropout: float | None = None,
    drop_connect_rate: float = 0.2,
    phi: float | None = None,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """Build an EfficientNet classifier.

    Args:
        variant: `b0`…`b7`, `lite0`…`lite4`, `b0v2`…`b3v2`, `sv2`, `mv2`, `lv2`, `phi=<float>`, `<family>:phi=<float>`, or a VariantSpec.
        num_classes: size of the classification head.
        weights: None (random init), "imagenet", or a path to a weights file
            (keras.applications `.h5`, or this model's own `.weights.h5`).
        input_shape: (height, width, 3) in pixels; defaults to the variant's resolution.
            `(None, None, 3)` accepts any size.
        dropout: head dropout rate; defaults to the variant's published value.
        drop_connect_rate: stochastic-depth rate of the last block, scaled linearly from 0 over the blocks.
        phi: compound coefficient for a custom variant of the paper's family (instead of `variant`).
        classifier_activation: activation of the `predictions` layer (None for logits).

    Returns:
        A functional `keras.Model` taking RGB floats in [0, 255]; its `predictions` layer
        always computes in float32, whatever the global precision policy.
    """
    spec = get_variant(variant, phi=phi)
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    input_shape = _input_shape(spec, input_shape)
    if weights is not None:
        # Fail before building a large graph when the weights cannot exist.
        from workbench.models import weights as weights_lib

        weights_lib.check_available(spec, weights)

    inputs = keras.Input(shape=input_shape, name="image")
    # Normalisation happens here, once: callers always feed RGB in [0, 255].
    x = _normalization_layer(spec)(inputs)
    x = _stem_or_top(x, spec, "stem_")
    plan = stage_plan(spec)
    for index, block_args in enumerate(plan):
        block = _block_builder(block_args.pop("block"))
        x = block(x, family=spec.architecture, drop_rate=drop_connect_rate * index / len(plan), **block_args)
    x = _stem_or_top(x, spec, "top_")
    outputs = _classifier(x, spec, num_classes, dropout, classifier_activation)
    model = keras.Model(inputs, outputs, name=spec.model_name)
    _set_normalization(model, spec)

    if weights is not None:
        weights_lib.load(model, spec, weights)
    return model


def _input_shape(spec: VariantSpec, input_shape: Sequence[int | None] | None) -> tuple:
    """(height, width, 3): the variant's resolution unless given."""
    shape = (spec.resolution, spec.resolution, 3) if input_shape is None else tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) for RGB images, got {shape}")
    return shape


def _stem_or_top(x, spec: VariantSpec, prefix: str):
    """The 3x3 stride-2 stem (`stem_`) or the 1x1 head convolution (`top_`), with BN and activation; each scales
    with the variant's width unless the family fixes it."""
    family = spec.architecture
    stem = prefix == "stem_"
    filters = family.stem_filters if stem else family.head_filters
    if family.rules.scale_stem if stem else family.rules.scale_head:
        filters = _round_filters(filters, spec)
    x = _conv_bn(
        x, filters, 3 if stem else 1, strides=2 if stem else 1, family=family, name=prefix, role="conv", bn="bn"
    )
    return layers.Activation(family.activation, name=f"{prefix}activation")(x)


def _classifier(x, spec: VariantSpec, num_classes: int, dropout: float | None, activation: str | None):
    """avg_pool -> top_dropout -> predictions. The head computes in float32, so softmax and the loss stay
    numerically safe under mixed precision."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    rate = spec.dropout if dropout is None else dropout
    if rate > 0:
        x = layers.Dropout(rate, name="top_dropout")(x)
    return layers.Dense(
        num_classes, activation=activation, kernel_initializer=DENSE_INIT, dtype="float32", name="predictions"
    )(x)
