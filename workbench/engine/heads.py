"""Starting a new classifier head at zero.

A new head starts at zero (as in BiT, Kolesnikov et al. 2020): its first loss is ln(C). The
keras.applications initialiser (fan_out scaling, made for 1000 classes) gives a few-class head
weights of +-0.6 and first-epoch losses above 10 on pooled features. The fine-tuning recipe and the
scaling search's candidates both start their heads this way.
"""

from __future__ import annotations

import numpy as np

HEAD_LAYER = "predictions"


def zero_head(model, layer: str = HEAD_LAYER) -> None:
    """Set every weight of `model`'s classifier layer (`predictions`) to zero, in place."""
    for variable in model.get_layer(layer).weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))


def is_multi_label(model) -> bool:
    """Whether `model` is a multi-label classifier: its `predictions` layer has a sigmoid (one probability per
    label) rather than a softmax. The head is the one source of truth of a run's kind."""
    return model.get_layer(HEAD_LAYER).get_config().get("activation") == "sigmoid"


def logits_model(model):
    """A Keras model sharing `model`'s weights that outputs the classifier's logits instead of its softmax.

    The `predictions` layer is a Dense layer with a softmax; this is the same Dense layer's affine part applied
    to the same features, so softmax(logits) is `model`'s output. Energy scores need the logits themselves
    (log of the probabilities loses their per-image scale). Computed in float32 like the head.
    """
    import keras

    head = model.get_layer(layer_name := HEAD_LAYER)
    features = head.input
    linear = keras.layers.Dense(head.units, activation=None, dtype="float32", name=f"{layer_name}_logits")
    logits = linear(features)
    linear.set_weights(head.get_weights())
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def logits_and_features_model(model):
    """A Keras model sharing `model`'s weights with two outputs: the logits (`logits_model`) and the pooled
    backbone features (the `avg_pool` output, float32) they are computed from: one forward pass gives both,
    for the feature-space rejection scores (`workbench.evaluation.ood`)."""
    import keras

    from workbench.models.surgery import FEATURES_LAYER

    logits = logits_model(model)
    features = keras.ops.cast(model.get_layer(FEATURES_LAYER).output, "float32")
    return keras.Model(model.inputs, [logits.output, features], name=f"{model.name}_logits_features")
