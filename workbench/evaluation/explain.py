"""Grad-CAM (Selvaraju et al., 2017): which pixels drove a class score, as an overlay on the image.

The activation map is taken at the last convolution block, `top_activation` (the same name in every
variant), weighted by the gradient of the class's logit averaged over space, rectified and scaled to
[0, 1]. The logit (pre-softmax score) is used as in the paper: the softmax output saturates for
confident predictions and its gradient then vanishes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def grad_cam(model, image: np.ndarray, class_index: int | None = None, layer_name: str | None = None):
    """Grad-CAM heatmap of one image.

    Args:
        model: a workbench classifier (a `layer_name` layer, then `avg_pool`, ..., `predictions`).
        image: float32 RGB (R, R, 3) in [0, 255] at the model's resolution.
        class_index: the class to explain; None for the predicted class.
        layer_name: the convolution output to explain; None for `surgery.LAST_CONV_LAYER` (`top_activation`).

    Returns:
        (heatmap float32 (h, w) in [0, 1] at the conv layer's resolution, class index, probabilities (C,)).
    """
    import keras
    import tensorflow as tf

    from workbench.models.surgery import LAST_CONV_LAYER

    layer_name = layer_name or LAST_CONV_LAYER
    try:
        conv_layer = model.get_layer(layer_name)
        head = model.get_layer("predictions")
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no {layer_name!r} or 'predictions' layer; Grad-CAM needs a workbench "
            "EfficientNet (built by workbench.models.build_model)"
        ) from None
    # One pass returns the conv activations and the pooled features feeding the classifier.
    features_model = keras.Model(model.inputs, [conv_layer.output, model.get_layer("avg_pool").output, model.output])
    batch = tf.convert_to_tensor(image[None], tf.float32)
    with tf.GradientTape() as tape:
        activations, pooled, probabilities = features_model(batch, training=False)
        tape.watch(activations)
        if class_index is None:
            class_index = int(tf.argmax(probabilities[0]))
        # The logit of the class: the predictions layer's affine part without its softmax.
        kernel, bias = tf.cast(head.kernel, tf.float32), tf.cast(head.bias, tf.float32)
        logits = tf.matmul(tf.cast(pooled, tf.float32), kernel) + bias
        score = logits[:, class_index]
    gradients = tape.gradient(score, activations)
    if gradients is None:
        raise ValueError(f"no gradient reaches {layer_name!r}; is it connected to the predictions?")
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2))  # (1, channels)
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(activations, tf.float32) * weights[:, None, None, :], axis=-1))[0]
    peak = float(tf.reduce_max(cam))
    heatmap = (cam / peak).numpy() if peak > 0 else np.zeros(cam.shape, np.float32)
    return heatmap.astype(np.float32), class_index, probabilities[0].numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size) over a uint8 RGB image with the `jet` colour map."""
    from matplotlib import colormaps
    from PIL import Image

    height, width = image.shape[:2]
    resized = Image.fromarray((heatmap * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    colours = colormaps["jet"](np.asarray(resized) / 255.0)[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def _centre_square(data: bytes) -> np.ndarray:
    """The picture the model sees (centre square of the short side) at the file's own resolution.

    Decoded by `workbench.serving.imaging` like the model input itself (EXIF orientation, alpha over
    white), so the heatmap is drawn over the pixels it was computed on.
    """
    import tensorflow as tf

    from workbench.serving.imaging import decode_rgb

    image = decode_rgb(tf.constant(data)).numpy()
    height, width = image.shape[:2]
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def output_name(image_path: Path, class_index: int, label: str) -> str:
    """`<image stem>_<class index>-<label>.png` with every character of the label that is not a letter or a
    digit replaced by `_` (as `new_run_id` does): a label comes from a labels.txt that may ship with a
    downloaded model, and `../` in it must not write outside the folder."""
    safe = "".join(c if c.isalnum() else "_" for c in label)[:64]
    return f"{image_path.stem}_{class_index:03d}-{safe}.png"


def explain(
    model_path: str | Path, image_path: str | Path, class_name: str | None = None, out: str | Path | None = None
) -> dict:
    """Write the Grad-CAM overlay of one image for a run directory or `.keras` model.

    Args:
        model_path: run directory or `.keras` file (Grad-CAM needs the Keras graph, not SavedModel/TFLite).
        image_path: the image file.
        class_name: the class to explain; None for the predicted class.
        out: output PNG; default `<run or model dir>/explain/<image stem>_<class index>-<class>.png`
            (`output_name`: the class name sanitised, so it never leaves that folder).

    Returns:
        {"out": path written, "class": explained class, "predicted": predicted class,
         "probability": probability of the explained class}.
    """
    import tensorflow as tf
    from PIL import Image

    from workbench.serving.imaging import decode_batch, read_image_file
    from workbench.serving.model_files import (
        ModelFileError,
        load_keras_model,
        locate_model,
        model_resolution,
        read_labels,
    )

    location = locate_model(model_path)
    if location.kind not in ("run", "keras"):
        raise ModelFileError(
            f"{model_path}: Grad-CAM needs the Keras model (a run directory or a .keras file), "
            f"not a {location.kind} export"
        )
    model = load_keras_model(location.path)
    labels = read_labels(location.labels_path)
    image_path = Path(image_path)
    data = read_image_file(image_path)  # the header is checked against the pixel limit before any decoding
    resolution = model_resolution(model)
    try:
        pixels = decode_batch(tf.constant([data]), resolution).numpy()[0]
        picture = _centre_square(data)
    except tf.errors.InvalidArgumentError:
        raise ValueError(f"{image_path}: not an image TensorFlow can decode; use JPEG, PNG, GIF, BMP or WebP") from None
    class_index = None
    if class_name is not None:
        if class_name not in labels:
            raise ValueError(f"unknown class {class_name!r}; the model's classes are: {', '.join(labels)}")
        class_index = labels.index(class_name)
    heatmap, class_index, probabilities = grad_cam(model, pixels, class_index)
    predicted = labels[int(np.argmax(probabilities))]
    if out is None:
        folder = location.path.parent / "explain"  # the run directory, or the .keras file's folder
        out = folder / output_name(image_path, class_index, labels[class_index])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(picture, heatmap)).save(out)
    return {
        "out": str(out),
        "class": labels[class_index],
        "predicted": predicted,
        "probability": float(probabilities[class_index]),
        "heatmap_shape": list(heatmap.shape),
    }
