"""Temperature and rejection threshold inside an exported graph: the calibrated outputs of `calibration.json`.

Both are graph constants (`temperature`, `reject_threshold`), as the label names are, so a server needs no
workbench code and no side file to answer "unknown". The math is `workbench.evaluation.rejection`'s, in
TensorFlow ops that SavedModel's allowlist and TFLite's builtins both have (the logsumexp is written out with
Max, Exp, Sum and Log rather than `tf.reduce_logsumexp`, which adds IsFinite and StopGradient).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.evaluation.calibrate import Calibration


def calibrated_outputs(logits, calibration: Calibration):
    """(probabilities softmax(logits / T) float32 (B, C), class_index int32 (B,), -1 below the threshold)."""
    import tensorflow as tf

    from workbench.evaluation.rejection import UNKNOWN_INDEX

    logits = tf.cast(logits, tf.float32)
    temperature = tf.constant(calibration.temperature, tf.float32, name="temperature")
    scaled = logits / temperature
    probabilities = tf.nn.softmax(scaled, axis=-1)
    index = tf.argmax(scaled, axis=-1, output_type=tf.int32)
    if calibration.threshold is None:
        return probabilities, index
    if calibration.score == "energy":
        top = tf.reduce_max(scaled, axis=-1, keepdims=True)
        log_z = tf.math.log(tf.reduce_sum(tf.exp(scaled - top), axis=-1)) + top[:, 0]
        value = temperature * log_z
    else:
        value = tf.reduce_max(probabilities, axis=-1)
    threshold = tf.constant(calibration.threshold, tf.float32, name="reject_threshold")
    return probabilities, tf.where(value >= threshold, index, tf.constant(UNKNOWN_INDEX, tf.int32))


def class_names_of(index, class_names: list[str]):
    """The class name of each index, `UNKNOWN_NAME` for `UNKNOWN_INDEX`."""
    import tensorflow as tf

    from workbench.evaluation.rejection import UNKNOWN_NAME

    names = tf.gather(tf.constant(class_names), tf.maximum(index, 0))
    return tf.where(index >= 0, names, tf.constant(UNKNOWN_NAME))
