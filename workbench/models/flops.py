"""Multiply-accumulate count of a built Keras model, read from its layers' shapes.

Convention: like the EfficientNet paper (whose "FLOPs" are multiply-adds: B0 0.39 B,
B7 37 B), we count the multiply-accumulates of convolutions and dense layers — the work
that dominates — and report FLOPs = 2 × MACs beside them. Batch norm, activations,
pooling and element-wise ops are left out, as in the paper.
"""

from __future__ import annotations

import math

import keras


def _spatial(shape) -> int:
    return math.prod(int(d) for d in shape[1:-1])


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates for one image through `layer` (0 for layers we do not count)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, channels, multiplier = layer.kernel.shape
        return _spatial(layer.output.shape) * kh * kw * channels * multiplier
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, c_in, c_out = layer.kernel.shape  # c_in is already per group
        return _spatial(layer.output.shape) * kh * kw * c_in * c_out
    if isinstance(layer, keras.layers.Dense):
        c_in, c_out = layer.kernel.shape
        return c_in * c_out
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image; the model's input shape must be fully defined."""
    if any(d is None for d in model.inputs[0].shape[1:]):
        raise ValueError("count_macs needs a fixed input size; build the model with input_shape=(H, W, 3)")
    return sum(layer_macs(layer) for layer in model.layers)
