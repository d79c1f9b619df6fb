"""tf.data input: decode → resize (→ augment) → batch → prefetch, from a `Manifest`.

Output of every dataset: (images float32 RGB in [0, 255] of shape (B, R, R, 3), one-hot float32 labels (B, C)),
or for multi-label manifests multi-hot float32 labels (B, C) (MixUp/CutMix mix them like one-hot rows).
Normalisation stays inside the model.

Speed (2-core laptops are a target): image sizes are known from the manifest, so crop windows are computed before
decoding. JPEGs are decoded with DCT-domain downscaling (`ratio` 2, 4 or 8) whenever the image stays at least as
large as the target after it, and only the crop window is decoded (`decode_and_crop_jpeg`). Deterministic parts
can be cached (memory or file), so later epochs skip decoding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.augment import AugmentPreset, batch_augmenter, get_preset
from pipelines.errors import UNREADABLE_FILE_MESSAGE
from pipelines.manifest import SPLITS, Manifest

_RATIOS = (1, 2, 4, 8)
_JPEG, _PNG = 0, 1
# With a training cache, images are kept with their short side at most this many times the target, so a cache of
# a photo dataset fits in memory; random-resized crops then come from that copy.
TRAIN_CACHE_SCALE = 1.25
AUTO_CACHE_BYTES = 1 << 30  # cache="auto": in memory when the cached split is estimated below 1 GiB
_SHARD_POLICIES = {
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Options of the tf.data input.

    image_size: output side R in pixels (the variant's resolution).
    resize: "crop" keeps the aspect ratio (short side to R, then centre crop for evaluation; random-resized crop for
        training); "stretch" resizes the whole image to R x R.
    cache: "auto" (memory when the split's cache fits in 1 GiB), "memory", "none", or a file path prefix.
    shard_policy: tf.distribute auto-shard policy: "data" (default; every worker reads the files, each keeps its
        share of elements, which works for a list of files in memory), "file", "auto" or "off".
    deterministic: keep element order fixed given the seed (evaluation datasets are always deterministic).
    """

    image_size: int = 224
    batch_size: int = 32
    augment: str | AugmentPreset = "light"  # a preset name, or a preset (progressive learning's stages)
    seed: int = 0
    resize: str = "crop"
    cache: str = "auto"
    shuffle_buffer: int = 0  # 0: the whole split
    deterministic: bool = True
    shard_policy: str = "data"
    drop_remainder: bool = False

    def __post_init__(self) -> None:
        get_preset(self.augment)
        if self.resize not in ("crop", "stretch"):
            raise ValueError(f"resize={self.resize!r}; use 'crop' (keep aspect ratio) or 'stretch'")
        if self.shard_policy not in _SHARD_POLICIES:
            raise ValueError(f"shard_policy={self.shard_policy!r}; use one of {', '.join(_SHARD_POLICIES)}")
        if self.image_size < 1 or self.batch_size < 1:
            raise ValueError(f"image_size ({self.image_size}) and batch_size ({self.batch_size}) must be positive")


@dataclasses.dataclass
class Datasets:
    """The three datasets of a manifest, and the un-augmented view of any split."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    manifest: Manifest
    config: DatasetConfig

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def steps(self, split: str) -> int:
        """Batches per epoch of `split`."""
        n = len(self.manifest.split_records(split))
        if split == "train" and self.config.drop_remainder:
            return n // self.config.batch_size
        return math.ceil(n / self.config.batch_size)

    def plain(self, split: str) -> tf.data.Dataset:
        """`split` without augmentation or shuffling, in manifest order (e.g. to cache backbone features)."""
        return make_dataset(self.manifest, split, self.config, training=False)


def make_datasets(
    manifest: Manifest,
    image_size: int = 224,
    batch_size: int = 32,
    augment: str = "light",
    seed: int = 0,
    **options: Any,
) -> Datasets:
    """Train (shuffled, augmented), val and test (deterministic, manifest order) datasets. See DatasetConfig."""
    config = DatasetConfig(image_size=image_size, batch_size=batch_size, augment=augment, seed=seed, **options)
    return Datasets(
        train=make_dataset(manifest, "train", config, training=True),
        val=make_dataset(manifest, "val", config, training=False),
        test=make_dataset(manifest, "test", config, training=False),
        manifest=manifest,
        config=config,
    )


# --------------------------------------------------------------------------- building blocks
# Every image is decoded by a graph without branches: files are grouped by (format, JPEG DCT ratio), both known
# from the manifest before anything is read, and each group gets its own map with a fixed decode op. `tf.cond` /
# `tf.switch_case` per element cost more than the decode itself for small images.


def _dct_ratio(fmt: int, short: float, target: float) -> int:
    """The largest JPEG DCT downscale (1, 2, 4, 8) that keeps `short` pixels at least `target` pixels."""
    if fmt != _JPEG:
        return 1
    return max((r for r in _RATIOS if short / r >= target), default=1)


def _centre_window(height: int, width: int, resize: str) -> tuple[int, int, int, int]:
    if resize == "stretch":
        return 0, 0, height, width
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def _scale_window(window, height, width, r: int):
    """A full-resolution window [y, x, h, w] in the coordinates of a JPEG decoded at 1/r (what libjpeg uses)."""
    if r == 1:
        return window
    h_scaled, w_scaled = (height + r - 1) // r, (width + r - 1) // r
    y = tf.minimum(window[0] // r, h_scaled - 1)
    x = tf.minimum(window[1] // r, w_scaled - 1)
    h = tf.clip_by_value(window[2] // r, 1, h_scaled - y)
    w = tf.clip_by_value(window[3] // r, 1, w_scaled - x)
    return tf.stack([y, x, h, w])


def _decoder(fmt: int, r: int):
    """decode(path, window [y, x, h, w] in full-resolution pixels, height, width) -> uint8 (h', w', 3)."""

    def decode(path, window, height, width):
        contents = tf.io.read_file(path)
        if fmt == _JPEG:  # only the window is decoded, at 1/r scale
            image = tf.io.decode_and_crop_jpeg(contents, _scale_window(window, height, width, r), channels=3, ratio=r)
        else:
            image = tf.io.decode_png(contents, channels=3)[
                window[0] : window[0] + window[2], window[1] : window[1] + window[3]
            ]
        image.set_shape([None, None, 3])
        return image

    return decode


def _random_window(height, width, scale, seed):
    """Random-resized crop window (Inception / EfficientNet style): area in `scale`, aspect ratio in [3/4, 4/3]."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 3]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def _resize(image, size):
    return tf.image.resize(image, [size, size], method="bilinear")


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _cache_bytes(manifest: Manifest, split: str, config: DatasetConfig, training: bool) -> int:
    total = 0
    for r in manifest.split_records(split):
        if training and config.resize == "crop":
            short = min(r.width, r.height)
            keep = min(1.0, TRAIN_CACHE_SCALE * config.image_size / max(short, 1))
            total += int(r.width * keep) * int(r.height * keep) * 3
        else:
            total += config.image_size**2 * 3
    return total


def _cache_mode(manifest, split, config, training) -> str:
    """The resolved cache setting: "none", "memory" or a file path prefix."""
    cache = config.cache
    if cache == "auto":
        cache = "memory" if _cache_bytes(manifest, split, config, training) <= AUTO_CACHE_BYTES else "none"
    return cache if cache not in (None, "") else "none"


def _apply_cache(ds, mode: str, split: str, config: DatasetConfig, training: bool):
    if mode == "none":
        return ds
    if mode == "memory":
        return ds.cache()
    return ds.cache(f"{mode}-{split}-{config.image_size}-{config.resize}{'-train' if training else ''}")


def _options(config: DatasetConfig, deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = _SHARD_POLICIES[config.shard_policy]
    return options


def _ordered(
    manifest: Manifest, split: str, target: float, window_fn, transform, deterministic: bool, skip_errors: bool = False
):
    """transform(uint8 image, label index) for every record of `split`, in manifest order.

    window_fn(height, width) -> full-resolution window; target: pixels the window's short side must keep after
    JPEG DCT downscaling. skip_errors: skip a file TensorFlow cannot read, with a logged warning (training);
    otherwise such a file stops the dataset with an error that names it (`_name_failed_files`).
    """
    records = manifest.split_records(split)
    labels = _label_rows(manifest, split)
    keys, windows = [], []
    for r in records:
        fmt = _JPEG if r.decode_format == "JPEG" else _PNG
        window = window_fn(r.height, r.width)
        keys.append((fmt, _dct_ratio(fmt, min(window[2], window[3]), target)))
        windows.append(window)
    groups = sorted(set(keys)) or [(_PNG, 1)]
    datasets = []
    for fmt, ratio in groups:
        members = [i for i, k in enumerate(keys) if k == (fmt, ratio)]
        decode = _decoder(fmt, ratio)
        columns = (
            tf.constant([records[i].source_path for i in members], tf.string),
            tf.constant([windows[i] for i in members], tf.int32, shape=[len(members), 4]),
            tf.constant([records[i].height for i in members], tf.int32),
            tf.constant([records[i].width for i in members], tf.int32),
            tf.constant(labels[members]),
        )
        if skip_errors:  # see make_dataset: training skips a file TensorFlow cannot decode, evaluation does not
            fn = lambda p, w, h, wd, y, decode=decode: transform(decode(p, w, h, wd), y)  # noqa: E731
        else:  # each element carries its manifest index, so that a failed file can be named
            columns += (tf.constant(members, tf.int64, shape=[len(members)]),)
            fn = lambda p, w, h, wd, y, i, decode=decode: (transform(decode(p, w, h, wd), y), i)  # noqa: E731
        ds = tf.data.Dataset.from_tensor_slices(columns).map(
            fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
        datasets.append(ds.ignore_errors(log_warning=skip_errors))
    if len(datasets) == 1:
        combined = datasets[0]
    else:
        selector = tf.data.Dataset.from_tensor_slices(tf.constant([groups.index(k) for k in keys], tf.int64))
        combined = tf.data.Dataset.choose_from_datasets(datasets, selector, stop_on_empty_dataset=False)
    return combined if skip_errors else _name_failed_files(combined, records)


def _name_failed_files(ds: tf.data.Dataset, records) -> tf.data.Dataset:
    """(element, manifest index) pairs in manifest order -> elements; a missing element fails naming its file.

    TensorFlow's decode errors name no file ("Invalid PNG data, size 4908": hardening report, finding C5). So
    errors were dropped per element above, and here the first element whose index is not its position names the
    file that failed. A sentinel after the last element catches a failure at the end.
    """
    n = len(records)
    names = [
        r.source_path + (f" (the normalised copy of {r.path})" if r.source_path != r.path else "") for r in records
    ]
    messages = tf.constant(
        [
            f"{UNREADABLE_FILE_MESSAGE} {name}: it is missing, changed since the ingest, or "
            "refused by TensorFlow's decoder. Restore or remove it, then ingest the data again"
            for name in names
        ]
        + [""]
    )
    blank = tf.nest.map_structure(
        lambda spec: tf.zeros([d if d is not None else 0 for d in spec.shape], spec.dtype), ds.element_spec[0]
    )
    sentinel = tf.data.Dataset.from_tensors((blank, tf.constant(n, tf.int64)))

    def check(position, item):
        element, index = item
        failed = tf.debugging.Assert(tf.equal(index, position), [tf.gather(messages, position)])
        with tf.control_dependencies([failed]):
            return tf.nest.map_structure(tf.identity, element)

    ds = ds.concatenate(sentinel).enumerate().map(check).take(n)  # sequential: one scalar compare
    return ds.apply(tf.data.experimental.assert_cardinality(n))


def _shuffled_random_crops(
    manifest: Manifest, split: str, config: DatasetConfig, scale, one_hot, flip, deterministic: bool
):
    """Training elements straight from the files: shuffled, each decoding only its random crop window."""
    size = config.image_size
    records = manifest.split_records(split)
    labels = _label_rows(manifest, split)
    # The ratio is fixed per file (a decode op has a fixed ratio), from the smallest crop the preset can draw.
    smallest = math.sqrt(scale[0] * 3 / 4)
    keys = []
    for r in records:
        fmt = _JPEG if r.decode_format == "JPEG" else _PNG
        keys.append((fmt, _dct_ratio(fmt, smallest * math.sqrt(r.width * r.height), size)))
    groups = sorted(set(keys)) or [(_PNG, 1)]
    datasets, weights = [], []
    for k, (fmt, ratio) in enumerate(groups):
        members = [i for i, key in enumerate(keys) if key == (fmt, ratio)]
        decode = _decoder(fmt, ratio)
        files = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant([records[i].source_path for i in members], tf.string),
                tf.constant([records[i].height for i in members], tf.int32),
                tf.constant([records[i].width for i in members], tf.int32),
                tf.constant(labels[members]),
            )
        ).shuffle(max(len(members), 1), seed=config.seed + k, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=config.seed + 100 + k, rerandomize_each_iteration=True).batch(2)

        def crop(element, seed, decode=decode):
            path, height, width, label = element
            window = _random_window(height, width, scale, seed)
            return flip(_resize(decode(path, window, height, width), size), seed), one_hot(label)

        datasets.append(
            tf.data.Dataset.zip((files, seeds)).map(
                crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
            )
        )
        weights.append(len(members))
    if len(datasets) == 1:
        return datasets[0]
    return tf.data.Dataset.sample_from_datasets(
        datasets,
        weights=[w / sum(weights) for w in weights],
        seed=config.seed,
        stop_on_empty_dataset=False,
        rerandomize_each_iteration=True,
    )


def make_dataset(manifest: Manifest, split: str, config: DatasetConfig, *, training: bool) -> tf.data.Dataset:
    """One split as batches. training=True: shuffled, random-resized crop and the preset's batch augmentation."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    preset: AugmentPreset = get_preset(config.augment)
    random_crop = training and preset.crop_scale is not None and config.resize == "crop"
    deterministic = config.deterministic or not training
    cache = _cache_mode(manifest, split, config, training)
    one_hot, flip = _one_hot(manifest.num_classes, manifest.multi_label), _flipper(preset.flip)

    # Ingest decoded every file with Pillow already. Should TensorFlow's decoder still refuse one (a file changed
    # on disk since, say), training skips it with a logged warning instead of stopping mid-epoch; evaluation
    # stays strict, because its order must match `manifest.split_records`.
    # Each path does its per-image work in ONE map: an extra map per element costs ~10% of the throughput.
    if not random_crop:
        ds = _centre_images(manifest, split, config, cache, one_hot, deterministic, training)
    elif cache == "none":
        # Fast path: shuffled file lists; only each random crop window is decoded.
        ds = _shuffled_random_crops(manifest, split, config, preset.crop_scale, one_hot, flip, deterministic)
        ds = ds.ignore_errors(log_warning=True)
    else:
        ds = _cached_random_crops(manifest, split, config, cache, preset.crop_scale, one_hot, flip, deterministic)

    if training and not random_crop and preset.flip:  # "stretch" resizing: the preset still flips
        seeds = tf.data.Dataset.random(seed=config.seed + 1, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda element, seed: (flip(element[0], seed), element[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    if training and preset.autoaugment:
        ds = _autoaugmented(ds, config, deterministic)
    return _batched(ds, preset, config, training, deterministic)


def _label_rows(manifest: Manifest, split: str) -> np.ndarray:
    """The split's labels as the datasets carry them until `_one_hot`: class indices int32 (N,), or for
    multi-label data multi-hot float32 rows (N, C) (`Manifest.split_targets`)."""
    if manifest.multi_label:
        return manifest.split_targets(split).reshape(-1, manifest.num_classes)
    return np.asarray(manifest.split_labels(split), np.int32)


def _autoaugmented(ds: tf.data.Dataset, config: DatasetConfig, deterministic: bool) -> tf.data.Dataset:
    """AutoAugment's policy on every training image, after the crop (and after any cache, so each epoch draws
    new sub-policies). Its own map: the policy's ops are per image, unlike the batch-level RandAugment."""
    from pipelines.autoaugment import autoaugmenter

    augment = autoaugmenter()
    seeds = tf.data.Dataset.random(seed=config.seed + 11, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda element, seed: (augment(element[0], seed), element[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _one_hot(num_classes: int, multi_label: bool = False):
    """label index -> one-hot float32 vector of `num_classes`; multi-hot rows pass through."""

    def one_hot(label):
        if multi_label:
            return label
        return tf.one_hot(label, num_classes, dtype=tf.float32)

    return one_hot


def _flipper(enabled: bool):
    """flip(image, seed): a seeded random left-right flip, or the identity when the preset does not flip."""

    def flip(image, seed):
        # Per image, next to the crop: Keras' RandomFlip on whole batches costs ~0.8 ms per 224 px image on CPU
        # (it computes both versions and selects), this costs next to nothing.
        if not enabled:
            return image
        return tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])

    return flip


def _shuffle(ds: tf.data.Dataset, config: DatasetConfig, n: int) -> tf.data.Dataset:
    """Reshuffled every epoch; the buffer is the whole split of `n` elements unless the config sets one."""
    return ds.shuffle(config.shuffle_buffer or max(n, 1), seed=config.seed, reshuffle_each_iteration=True)


def _centre_images(
    manifest: Manifest, split: str, config: DatasetConfig, cache: str, one_hot, deterministic: bool, training: bool
) -> tf.data.Dataset:
    """Centre-cropped (or stretched) images with one-hot labels, cached as uint8 when `cache` asks for it.

    Evaluation and "stretch" training take this path; training shuffles it (after the cache, so every epoch
    gets a new order)."""
    size = config.image_size
    n = len(manifest.split_records(split))
    window = lambda h, w: _centre_window(h, w, config.resize)  # noqa: E731
    if cache == "none":

        def evaluate(image, label):
            # Rounded to whole pixel values like the cached path below (and the exported serving graph), so
            # evaluation gives the same tensors whatever the cache setting.
            image = tf.cast(_to_uint8(_resize(image, size)), tf.float32)
            image.set_shape([size, size, 3])
            return image, one_hot(label)

        ds = _ordered(manifest, split, size, window, evaluate, deterministic, skip_errors=training)
        return _shuffle(ds, config, n) if training else ds

    def evaluate_for_cache(image, label):  # cached as uint8: a quarter of the memory of float32
        image = _to_uint8(_resize(image, size))
        image.set_shape([size, size, 3])
        return image, label

    ds = _ordered(manifest, split, size, window, evaluate_for_cache, deterministic, skip_errors=training)
    ds = _apply_cache(ds, cache, split, config, training)
    if training:
        ds = _shuffle(ds, config, n)
    return ds.map(
        lambda image, label: (tf.cast(image, tf.float32), one_hot(label)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _cached_random_crops(
    manifest: Manifest, split: str, config: DatasetConfig, cache: str, scale, one_hot, flip, deterministic: bool
) -> tf.data.Dataset:
    """Training elements from a cache: decode once to a bounded size, cache, then crop from the cached copy every
    epoch (see TRAIN_CACHE_SCALE)."""
    size = config.image_size
    keep = math.ceil(TRAIN_CACHE_SCALE * size)

    def shrink(image, label):
        shape = tf.shape(image)
        factor = tf.minimum(1.0, keep / tf.cast(tf.minimum(shape[0], shape[1]), tf.float32))
        new = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * factor), tf.int32)
        image = tf.cond(factor < 1.0, lambda: _to_uint8(tf.image.resize(image, new, antialias=True)), lambda: image)
        return image, label

    ds = _ordered(manifest, split, keep, lambda h, w: (0, 0, h, w), shrink, deterministic, skip_errors=True)
    ds = _shuffle(_apply_cache(ds, cache, split, config, True), config, len(manifest.split_records(split)))
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)

    def crop(element, seed):
        image, label = element
        shape = tf.shape(image)
        w = _random_window(shape[0], shape[1], scale, seed)
        out = flip(_resize(image[w[0] : w[0] + w[2], w[1] : w[1] + w[3]], size), seed)
        out.set_shape([size, size, 3])
        return out, one_hot(label)

    return tf.data.Dataset.zip((ds, seeds)).map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _batched(
    ds: tf.data.Dataset, preset: AugmentPreset, config: DatasetConfig, training: bool, deterministic: bool
) -> tf.data.Dataset:
    """Elements -> batches, with the preset's batch augmentation when training, prefetched, with the options set."""
    autotune = tf.data.AUTOTUNE
    ds = ds.batch(
        config.batch_size,
        drop_remainder=training and config.drop_remainder,
        num_parallel_calls=autotune,
        deterministic=deterministic,
    )
    augment = batch_augmenter(preset, config.seed) if training else None
    if augment is not None:
        choices = tf.data.Dataset.random(seed=config.seed + 7, rerandomize_each_iteration=True).map(
            lambda x: tf.cast(x % 1000, tf.float32) / 1000.0
        )
        ds = tf.data.Dataset.zip((ds, choices)).map(
            lambda batch, choice: augment(batch[0], batch[1], choice),
            num_parallel_calls=autotune,
            deterministic=deterministic,
        )
    ds = ds.prefetch(autotune)
    return ds.with_options(_options(config, deterministic))
