"""Phase-1 feature caching: run the frozen backbone once, then train the head on its output.

With a frozen backbone and no pixel augmentation, every epoch would recompute exactly the same
pooled features; computing them once turns each later epoch into a few Dense steps (the
`bench_time_to_accuracy` benchmark measures the gain against recomputing them every epoch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.engine.rundir import atomic_path


def extract_features(
    extractor,
    dataset,
    *,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pooled features (float32) and labels of every batch of `dataset`, in dataset order.

    `extractor` maps images to pooled features (`workbench.models.surgery.feature_extractor`);
    it is called in inference mode. Returns None when `should_stop()` turns true.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def features(images):
        # float32 storage whatever the compute precision: the float32 head reads it.
        return tf.cast(extractor(images, training=False), tf.float32)

    feats, labels = [], []
    n = 0
    for images, y in dataset:
        if should_stop is not None and should_stop():
            return None
        feats.append(features(images).numpy())
        labels.append(np.asarray(y, dtype=np.float32))
        n += len(labels[-1])
        if on_batch is not None:
            on_batch(len(feats), n)
    if not feats:
        return np.zeros((0, extractor.output_shape[-1]), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(feats), np.concatenate(labels)


def feature_dataset(features: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int):
    """A tf.data pipeline over cached features, reshuffled every epoch when `shuffle`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def save_cache(path: Path, key: dict, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, _key=np.array(json.dumps(key, sort_keys=True)), **arrays)


def load_cache(path: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the cache is missing or was made for another key."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            if str(data["_key"]) != json.dumps(key, sort_keys=True):
                return None
            return {k: data[k] for k in data.files if k != "_key"}
    except (OSError, ValueError, KeyError):
        return None
