"""Other sources: TFDS (offline: a locally built builder and mocked data) and in-memory arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import DataError, ingest


def write_split_folder(root: Path, splits: dict[str, int]) -> Path:
    for split, n in splits.items():
        for k, name in enumerate(("cats", "dogs")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((20, 24, 3), 50 + 150 * k, np.uint8)).save(folder / f"{i}.png")
    return root


def test_tfds_builder_over_a_local_folder_maps_splits(tmp_path):
    import tensorflow_datasets as tfds

    builder = tfds.folder_dataset.ImageFolder(str(write_split_folder(tmp_path / "src", {"train": 5, "test": 3})))
    manifest = ingest(builder, tmp_path / "work")
    assert manifest.source == "tfds:image_folder"
    assert manifest.classes == ["cats", "dogs"] and manifest.user_splits
    assert manifest.split_sizes()["test"] == 6  # the builder's test split, kept as test
    assert manifest.split_sizes()["train"] + manifest.split_sizes()["val"] == 10  # val carved from train
    rec = manifest.split_records("test")[0]
    assert rec.format == "PNG" and (rec.width, rec.height) == (24, 20) and Path(rec.path).exists()


def test_tfds_name_with_mocked_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=200, policy=tfds.testing.MockPolicy.USE_CODE):
        manifest = ingest("tfds:mnist", tmp_path / "work")
    assert manifest.source == "tfds:mnist"
    assert manifest.classes == [str(i) for i in range(10)]  # the ClassLabel names, in label order
    assert len(manifest.usable()) == 200 and sum(manifest.split_sizes().values()) == 200
    assert {r.format for r in manifest.usable()} == {"PNG"}


def test_tfds_not_prepared_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"tfds:mnist is not prepared in .*empty.*tfds build mnist"):
        ingest("tfds:mnist", tmp_path / "work", tfds_data_dir=str(tmp_path / "empty"), tfds_download=False)


def test_unknown_tfds_name_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"tfds:no_such_dataset_xyz is not a TensorFlow Datasets name"):
        ingest("tfds:no_such_dataset_xyz", tmp_path / "work")


def test_in_memory_arrays(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(30) % 3
    manifest = ingest((images, labels, ["ant", "bee", "cow"]), tmp_path / "work")
    assert manifest.classes == ["ant", "bee", "cow"]  # the caller's order defines the label indices
    assert manifest.class_counts() == {"ant": 10, "bee": 10, "cow": 10}
    first = manifest.records[0]
    assert first.label == "ant"
    assert np.array_equal(np.asarray(Image.open(first.path)), images[0])  # stored losslessly


def test_in_memory_arrays_one_hot_grayscale_and_float(tmp_path):
    images = np.linspace(0, 255, 12 * 8 * 8).reshape(12, 8, 8, 1).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[np.arange(12) % 2]
    manifest = ingest((images, labels, ["no", "yes"]), tmp_path / "work")
    assert manifest.class_counts() == {"no": 6, "yes": 6}


@pytest.mark.parametrize(
    "images, labels, names, expected",
    [
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, int), ["a", "b"], "4 images but 3 labels"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 2, 0]), ["a", "b"], "2 class names"),
        (np.zeros((4, 8, 8, 3), np.float32) + 0.5, np.array([0, 1, 0, 1]), ["a", "b"], r"\[0, 1\]"),
        (np.zeros((4, 8), np.uint8), np.array([0, 1, 0, 1]), ["a", "b"], "shape"),
    ],
)
def test_bad_in_memory_arrays_are_clear_errors(tmp_path, images, labels, names, expected):
    with pytest.raises(DataError, match=expected):
        ingest((images, labels, names), tmp_path / "work")
