"""Freezing, unfreezing and slicing a built EfficientNet by block.

The model is flat (keras.applications layer names), so blocks are recovered from names:
`stem_*` → "stem", `block6d_*` → "block6d", `top_conv/top_bn/top_activation` → "top",
and the head is `avg_pool`, `top_dropout`, `predictions`.
"""

from __future__ import annotations

import re

import keras

from workbench.models.builder import HEAD_LAYERS, NORMALIZATION_LAYER

LAST_CONV_LAYER = "top_activation"  # Grad-CAM's target: the last convolutional feature map
FEATURES_LAYER = "avg_pool"
HEAD_DROPOUT_LAYER = "top_dropout"

_BLOCK = re.compile(r"^(block\d+[a-z]+)_")


def block_of(layer_name: str) -> str | None:
    """The block a layer belongs to, or None for the input, normalisation and head layers."""
    if layer_name in HEAD_LAYERS or layer_name == NORMALIZATION_LAYER:
        return None
    if layer_name.startswith("stem_"):
        return "stem"
    if layer_name.startswith("top_"):
        return "top"
    match = _BLOCK.match(layer_name)
    return match.group(1) if match else None


def block_names(model: keras.Model) -> list[str]:
    """["stem", "block1a", ..., "top"] in the order data flows through them."""
    names: list[str] = []
    for layer in model.layers:
        block = block_of(layer.name)
        if block is not None and block not in names:
            names.append(block)
    return names


def _set_trainable(model: keras.Model, trainable_blocks: set[str]) -> None:
    model.trainable = True
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            # Frozen BN runs in inference mode in Keras 3: its moving statistics stay the
            # ImageNet ones. Unfrozen BN on small batches is the most reported EfficientNet
            # fine-tuning failure (keras.io "Image classification via fine-tuning with EfficientNet").
            layer.trainable = False
        else:
            layer.trainable = block_of(layer.name) in trainable_blocks


def unfreeze_all(model: keras.Model, bn_momentum: float | None = None) -> list[str]:
    """Training from scratch: every layer trains, BatchNorm included (its statistics are still random, so it
    must learn them, in training mode), with `bn_momentum` when given. Returns every block's name."""
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True
        if bn_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return block_names(model)


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: only the head trains."""
    _set_trainable(model, set())


def unfreeze_top_blocks(model: keras.Model, n: int) -> list[str]:
    """Phase 2: the last `n` blocks (counting "top" as one) and the head train; BN stays frozen.

    Returns the names of the unfrozen blocks.
    """
    blocks = block_names(model)
    if n < 0:
        raise ValueError(f"number of blocks to unfreeze must be >= 0, got {n}")
    chosen = blocks[len(blocks) - min(n, len(blocks)) :] if n else []
    _set_trainable(model, set(chosen))
    return chosen


def feature_extractor(model: keras.Model) -> keras.Model:
    """Input images → pooled backbone features (the `avg_pool` output), sharing weights."""
    return keras.Model(model.input, model.get_layer(FEATURES_LAYER).output, name=f"{model.name}-features")


def classifier_head(model: keras.Model) -> keras.Model:
    """Pooled features → class probabilities, sharing the model's head layers and weights."""
    features = keras.Input(shape=model.get_layer(FEATURES_LAYER).output.shape[1:], name="features")
    x = features
    for name in HEAD_LAYERS[1:]:
        try:
            x = model.get_layer(name)(x)
        except ValueError:  # no top_dropout when dropout=0
            continue
    return keras.Model(features, x, name=f"{model.name}-head")


def split_at_block(model: keras.Model, block: str) -> tuple[keras.Model, keras.Model]:
    """`(trunk, top)`, sharing the model's layers and weights: images -> the input of `block`, and that
    tensor -> class probabilities. Blocks exchange one tensor (their residual connections stay inside
    them), so the two compose to the whole model; Keras refuses the split if they did not."""
    first = next((layer for layer in model.layers if block_of(layer.name) == block), None)
    if first is None:
        raise ValueError(f"{model.name} has no block {block!r}; its blocks are {', '.join(block_names(model))}")
    cut = first.input
    return keras.Model(model.input, cut, name=f"{model.name}-trunk"), keras.Model(
        cut, model.output, name=f"{model.name}-top"
    )
