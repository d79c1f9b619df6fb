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


def _set_normalization(model: keras.Model, spec: VariantSpec) -> None:
    """Fill the `normalization` layer with the family's statistics on the [0, 255] scale (kept as
    weights, like keras.applications, so parameter counts and weight files line up)."""
    import numpy as np

    layer = model.get_layer(NORMALIZATION_LAYER)
    normalization = spec.architecture.normalization
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
    activation: str,
    drop_rate: float,
):
    """Mobile inverted bottleneck (MBConv) with optional squeeze-and-excitation.

    Drop-connect (stochastic depth) applies only on identity blocks, where the residual
    path exists to be dropped.
    """
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = layers.Conv2D(
            filters, 1, padding="same", use_bias=False, kernel_initializer=CONV_INIT, name=name + "expand_conv"
        )(x)
        x = layers.BatchNormalization(name=name + "expand_bn")(x)
        x = layers.Activation(activation, name=name + "expand_activation")(x)
    if strides == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=name + "dwconv_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        depthwise_initializer=CONV_INIT,
        name=name + "dwconv",
    )(x)
    x = layers.BatchNormalization(name=name + "bn")(x)
    x = layers.Activation(activation, name=name + "activation")(x)
    if se_ratio:
        filters_se = max(1, int(filters_in * se_ratio))
        se = layers.GlobalAveragePooling2D(name=name + "se_squeeze")(x)
        se = layers.Reshape((1, 1, filters), name=name + "se_reshape")(se)
        se = layers.Conv2D(
            filters_se, 1, padding="same", activation=activation, kernel_initializer=CONV_INIT, name=name + "se_reduce"
        )(se)
        se = layers.Conv2D(
            filters, 1, padding="same", activation="sigmoid", kernel_initializer=CONV_INIT, name=name + "se_expand"
        )(se)
        x = layers.Multiply(name=name + "se_excite")([x, se])
    x = layers.Conv2D(
        filters_out, 1, padding="same", use_bias=False, kernel_initializer=CONV_INIT, name=name + "project_conv"
    )(x)
    x = layers.BatchNormalization(name=name + "project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # noise_shape drops whole examples' residual branches: stochastic depth, not dropout.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = layers.Add(name=name + "add")([x, inputs])
    return x


# Block builders by `Stage.block`; EfficientNetV2's "fused_mbconv" is one more function and entry.
BLOCKS = {"mbconv": mbconv_block}


def stage_plan(spec: VariantSpec) -> list[dict]:
    """The scaled blocks in order: one dict of block-builder arguments (minus drop rate) per block,
    with the builder's name under "block"."""
    family = spec.architecture
    plan = []
    for stage_index, stage in enumerate(family.stages):
        fixed = stage_index in family.rules.fixed_repeats
        repeats = stage.repeats if fixed else round_repeats(stage.repeats, spec.depth)
        filters_in = round_filters(stage.filters_in, spec.width)
        filters_out = round_filters(stage.filters_out, spec.width)
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
                    activation=family.activation,
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
        variant: `b0`…`b7`, `lite0`…`lite4`, `phi=<float>`, `<family>:phi=<float>`, or a VariantSpec.
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
    x = layers.Normalization(axis=-1, name=NORMALIZATION_LAYER)(inputs)
    x = _stem(x, spec)
    plan = stage_plan(spec)
    for index, block_args in enumerate(plan):
        block = _block_builder(block_args.pop("block"))
        x = block(x, drop_rate=drop_connect_rate * index / len(plan), **block_args)
    x = _top(x, spec)
    outputs = _classifier(x, num_classes, spec.dropout if dropout is None else dropout, classifier_activation)
    model = keras.Model(inputs, outputs, name=spec.model_name)
    _set_normalization(model, spec)

    if weights is not None:
        weights_lib.load(model, spec, weights)
    return model


def _input_shape(spec: VariantSpec, input_shape: Sequence[int | None] | None) -> tuple:
    """(height, width, 3): the variant's resolution when not given; anything not RGB is refused."""
    if input_shape is None:
        input_shape = (spec.resolution, spec.resolution, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) for RGB images, got {input_shape}")
    return input_shape


def _stem(x, spec: VariantSpec):
    """The stride-2 3x3 stem convolution; its width scales with the variant unless the family fixes it."""
    family = spec.architecture
    stem_filters = round_filters(family.stem_filters, spec.width) if family.rules.scale_stem else family.stem_filters
    x = layers.ZeroPadding2D(padding=_correct_pad(x, 3), name="stem_conv_pad")(x)
    x = layers.Conv2D(
        stem_filters, 3, strides=2, padding="valid", use_bias=False, kernel_initializer=CONV_INIT, name="stem_conv"
    )(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    return layers.Activation(family.activation, name="stem_activation")(x)


def _top(x, spec: VariantSpec):
    """The 1x1 top convolution after the last block; its width scales with the variant unless the family fixes it."""
    family = spec.architecture
    head_filters = round_filters(family.head_filters, spec.width) if family.rules.scale_head else family.head_filters
    x = layers.Conv2D(head_filters, 1, padding="same", use_bias=False, kernel_initializer=CONV_INIT, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    return layers.Activation(family.activation, name="top_activation")(x)


def _classifier(x, num_classes: int, rate: float, activation: str | None):
    """Pooling, dropout at `rate` (none when 0) and the `predictions` layer."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if rate > 0:
        x = layers.Dropout(rate, name="top_dropout")(x)
    # float32 head: softmax and the loss stay numerically safe under mixed precision.
    return layers.Dense(
        num_classes,
        activation=activation,
        kernel_initializer=DENSE_INIT,
        dtype="float32",
        name="predictions",
    )(x)
