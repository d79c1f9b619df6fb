"""Temperature and rejection threshold inside an exported graph: the calibrated outputs of `calibration.json`.

Both are graph constants (`temperature`, `reject_threshold`), as the label names are, so a server needs no
workbench code and no side file to answer "unknown". The math is `workbench.evaluation.rejection`'s, in
TensorFlow ops that SavedModel's allowlist and TFLite's builtins both have (the logsumexp is written out with
Max, Exp, Sum and Log rather than `tf.reduce_logsumexp`, which adds IsFinite and StopGradient).

A feature score (`workbench.evaluation.ood`: Mahalanobis distances) takes the pooled features as well: its
statistics are graph constants too (`ood_background_mean` (D,), `ood_precision` (D, D), `ood_cross` (D, K),
`ood_offset` (K,), and for the relative score `ood_background_precision` (D, D)), and the graph computes the same expanded
quadratic forms as `FeatureGaussians.score`, with MatMul, Mul, Sum, Sub and Max (and for unit-norm features
Square, Maximum and Rsqrt) only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.evaluation.calibrate import Calibration


def feature_score(features, calibration: Calibration):
    """The feature score of `calibration` (its `gaussians`) of each row of `features` (B, D), float32."""
    import tensorflow as tf

    from workbench.evaluation.ood import NORM_FLOOR

    gaussians = calibration.gaussians
    terms = gaussians.terms()
    features = tf.cast(features, tf.float32)
    if gaussians.normalised:  # unit L2 norm, as `workbench.evaluation.ood.unit_norm`
        squared = tf.maximum(tf.reduce_sum(tf.square(features), axis=-1, keepdims=True), NORM_FLOOR)
        features = features * tf.math.rsqrt(squared)
    z = features - tf.constant(gaussians.background_mean, tf.float32, name="ood_background_mean")
    precision = tf.constant(gaussians.precision, tf.float32, name="ood_precision")
    quadratic = tf.reduce_sum(tf.matmul(z, precision) * z, axis=-1)
    cross = tf.matmul(z, tf.constant(terms["cross"], tf.float32, name="ood_cross"))
    offset = tf.constant(terms["offset"], tf.float32, name="ood_offset")
    value = tf.reduce_max(2.0 * cross - offset, axis=-1) - quadratic
    if calibration.score == "relative_mahalanobis":
        background = tf.constant(gaussians.background_precision, tf.float32, name="ood_background_precision")
        value = value + tf.reduce_sum(tf.matmul(z, background) * z, axis=-1)
    return value


def calibrated_outputs(logits, calibration: Calibration, features=None):
    """(probabilities softmax(logits / T) float32 (B, C), class_index int32 (B,), -1 below the threshold).
    `features` (B, D), the pooled features of the same images, are needed when `calibration.needs_features`."""
    import tensorflow as tf

    from workbench.evaluation.rejection import UNKNOWN_INDEX

    logits = tf.cast(logits, tf.float32)
    temperature = tf.constant(calibration.temperature, tf.float32, name="temperature")
    scaled = logits / temperature
    probabilities = tf.nn.softmax(scaled, axis=-1)
    index = tf.argmax(scaled, axis=-1, output_type=tf.int32)
    if calibration.threshold is None:
        return probabilities, index
    if calibration.needs_features:
        if features is None:
            raise ValueError(f"the {calibration.score} rejection score needs the pooled features in the graph")
        value = feature_score(features, calibration)
    elif calibration.score == "energy":
        top = tf.reduce_max(scaled, axis=-1, keepdims=True)
        log_z = tf.math.log(tf.reduce_sum(tf.exp(scaled - top), axis=-1)) + top[:, 0]
        value = temperature * log_z
    else:
        value = tf.reduce_max(probabilities, axis=-1)
    threshold = tf.constant(calibration.threshold, tf.float32, name="reject_threshold")
    return probabilities, tf.where(value >= threshold, index, tf.constant(UNKNOWN_INDEX, tf.int32))


def calibrated_network(model, calibration: Calibration):
    """(network, answer): a Keras model sharing `model`'s weights, and `answer(images)` → (probabilities,
    class_index) computed through it as `calibrated_outputs` does. A feature score also takes the pooled
    features, a second output of the same forward pass. Track `network` in the export that serves `answer`."""
    from workbench.engine.heads import logits_and_features_model, logits_model

    network = logits_and_features_model(model) if calibration.needs_features else logits_model(model)

    def answer(images):
        outputs = network(images, training=False)
        logits, features = outputs if calibration.needs_features else (outputs, None)
        return calibrated_outputs(logits, calibration, features)

    return network, answer


def class_names_of(index, class_names: list[str]):
    """The class name of each index, `UNKNOWN_NAME` for `UNKNOWN_INDEX`."""
    import tensorflow as tf

    from workbench.evaluation.rejection import UNKNOWN_NAME

    names = tf.gather(tf.constant(class_names), tf.maximum(index, 0))
    return tf.where(index >= 0, names, tf.constant(UNKNOWN_NAME))
