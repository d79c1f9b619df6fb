"""TFDS datasets as a source: `ingest("tfds:NAME")` or `ingest(builder)` for any `tfds.core.DatasetBuilder`.

The examples are written out once as files under the work directory (encoded bytes as stored by TFDS, no
re-encoding), so TFDS data goes through the same checks, manifest and tf.data path as every other source, and
evaluation can name each example.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipelines.errors import DataError
from pipelines.sources import Found, FoundFile, class_name

# TFDS split names mapped to ours. Other splits (e.g. "unlabeled", "extra") are skipped with a warning.
TFDS_SPLITS = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}


def _extension(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"  # Pillow identifies images by content, so the extension is only a hint


def _builder(name: str, data_dir: str | None, download: bool):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # DatasetNotFoundError and friends; tfds' own message lists close names
        raise DataError(
            f"tfds:{name} is not a TensorFlow Datasets name ({exc}); see https://www.tensorflow.org/datasets/catalog"
        ) from None
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"tfds:{name} is not prepared in {builder.data_dir_root} and downloads are off; "
                f"run `tfds build {name}` on a machine with internet access, or pass its data_dir"
            )
        try:
            builder.download_and_prepare()
        except Exception as exc:
            raise DataError(
                f"tfds:{name} is not prepared in {builder.data_dir_root} and could not be downloaded "
                f"({type(exc).__name__}: {str(exc)[:300]}); run `tfds build {name}` on a machine with internet "
                f"access and copy {builder.data_dir_root} here, or use a folder or .zip of images instead"
            ) from None
    return builder


def _image_and_label_keys(builder) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image_key, label_key = keys
    else:
        features = builder.info.features
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
        if not images or not labels:
            raise DataError(
                f"TFDS dataset {builder.name} has no image and class-label features; "
                "only image classification datasets can be used"
            )
        image_key, label_key = images[0], labels[0]
    label_feature = builder.info.features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise DataError(
            f"TFDS dataset {builder.name}: {label_key!r} is not a class label; "
            "only image classification datasets can be used"
        )
    return image_key, label_key


def find_tfds(data, dest: str | os.PathLike, *, data_dir: str | None = None, download: bool = True) -> Found:
    """Write a TFDS dataset's labelled splits as image files under `dest` and describe them."""
    import tensorflow_datasets as tfds
    from PIL import Image

    if isinstance(data, str):
        builder = _builder(data.removeprefix("tfds:"), data_dir, download)
    else:
        builder = data
    image_key, label_key = _image_and_label_keys(builder)
    names = [class_name(n) for n in builder.info.features[label_key].names]
    dest = Path(dest)
    files: list[FoundFile] = []
    warnings: list[str] = []
    splits = sorted(builder.info.splits.keys()) or ["train"]
    mapped = {s: TFDS_SPLITS[s] for s in splits if s in TFDS_SPLITS}
    if "train" not in mapped.values():
        raise DataError(f"TFDS dataset {builder.name} has no train split (splits: {', '.join(splits)})")
    if skipped := [s for s in splits if s not in mapped]:
        warnings.append(f"TFDS splits {', '.join(skipped)} of {builder.name} were not used (no train/val/test name)")
    for tfds_split, split in mapped.items():
        ds = builder.as_dataset(split=tfds_split, decoders={image_key: tfds.decode.SkipDecoding()})
        for i, example in enumerate(tfds.as_numpy(ds)):
            label = int(example[label_key])
            folder = dest / split / f"{label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            value = example[image_key]
            if isinstance(value, bytes):
                path = folder / f"{i:07d}{_extension(value)}"
                path.write_bytes(value)
            else:  # a decoded array (datasets stored as tensors, or mocked data)
                pixels = np.asarray(value)
                if pixels.ndim == 3 and pixels.shape[-1] == 1:
                    pixels = pixels[..., 0]
                path = folder / f"{i:07d}.png"
                Image.fromarray(pixels.astype(np.uint8)).save(path, compress_level=1)
            files.append(FoundFile(path, names[label], split))
    user_splits = len(set(mapped.values())) > 1
    if not user_splits:  # only a train split: ingest makes val and test from it
        files = [FoundFile(f.path, f.label, None) for f in files]
    return Found(f"tfds:{builder.name}", names, files, user_splits, warnings, root=str(dest))
