"""tf.data input: tensors the model expects, deterministic evaluation in manifest order, correct resizing,
augmentation presets that change training images only and keep labels valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import AUGMENT_PRESETS, DatasetConfig, ingest, make_datasets
from pipelines.augment import batch_augmenter, get_preset


def save(path: Path, pixels: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt, **kw)
    return path


@pytest.fixture
def coded(tmp_path):
    """3 classes x 8 images; every image is one flat grey level that encodes its own identity."""
    root = tmp_path / "data"
    for k, name in enumerate(("a", "b", "c")):
        for i in range(8):
            save(root / name / f"{i}.png", np.full((20, 30, 3), 10 + 30 * k + 3 * i, np.uint8))
    return ingest(root, tmp_path / "work")


def grey_of(path: str) -> int:
    return int(np.asarray(Image.open(path))[0, 0, 0])


def collect(ds):
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_batches_are_float_rgb_0_255_and_one_hot(coded):
    ds = make_datasets(coded, image_size=32, batch_size=4, augment="none")
    x, y = next(iter(ds.train))
    assert x.shape == (4, 32, 32, 3) and x.dtype == tf.float32
    assert y.shape == (4, 3) and y.dtype == tf.float32
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 255.0 and float(tf.reduce_max(x)) > 1.0
    assert np.allclose(y.numpy().sum(axis=1), 1.0) and set(np.unique(y.numpy())) <= {0.0, 1.0}
    assert ds.classes == ["a", "b", "c"] and ds.steps("train") == 5  # 18 training images / 4


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_is_deterministic_and_in_manifest_order(coded, split):
    ds = make_datasets(coded, image_size=16, batch_size=2, augment="strong")
    records = coded.split_records(split)
    expected = [grey_of(r.path) for r in records]
    for _ in range(2):  # two passes, same order
        images, labels = collect(getattr(ds, split))
        assert images[:, 8, 8, 0].round().astype(int).tolist() == expected  # no augmentation either
        assert labels.argmax(1).tolist() == coded.split_labels(split)


def test_plain_view_is_unshuffled_and_unaugmented(coded):
    ds = make_datasets(coded, image_size=16, batch_size=5, augment="strong")
    images, labels = collect(ds.plain("train"))
    assert images[:, 3, 3, 0].round().astype(int).tolist() == [grey_of(r.path) for r in coded.split_records("train")]
    assert set(np.unique(labels)) == {0.0, 1.0}


def test_training_order_is_shuffled_each_epoch_and_covers_every_image(coded):
    ds = make_datasets(coded, image_size=16, batch_size=32, augment="none")
    first, second = collect(ds.train)[0][:, 8, 8, 0], collect(ds.train)[0][:, 8, 8, 0]
    expected = sorted(grey_of(r.path) for r in coded.split_records("train"))
    assert sorted(first.round().astype(int).tolist()) == expected
    assert first.tolist() != second.tolist()


def stripes(h: int, w: int) -> np.ndarray:
    """Left quarter red, middle half green, right quarter blue."""
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, : w // 4] = (255, 0, 0)
    pixels[:, w // 4 : 3 * w // 4] = (0, 255, 0)
    pixels[:, 3 * w // 4 :] = (0, 0, 255)
    return pixels


@pytest.fixture
def wide(tmp_path):
    """Wide images (h=160, w=320) as PNG and as large-ish JPEG, in two classes."""
    root = tmp_path / "wide"
    for name in ("p", "q"):
        for i in range(3):
            save(root / name / f"{i}.png", stripes(160, 320))
            save(root / name / f"{i}.jpg", stripes(160, 320), "JPEG", quality=95)
    return ingest(root, tmp_path / "work", val_fraction=0.0, test_fraction=0.5)


def test_default_resize_keeps_aspect_ratio_with_a_centre_crop(wide):
    images, _ = collect(make_datasets(wide, image_size=20, batch_size=8).test)
    # The centre square (x from 80 to 240) is entirely green for PNG and JPEG (decoded at 1/8 scale) alike.
    assert images.shape[1:] == (20, 20, 3)
    assert np.all(images[:, :, 2:-2, 1] > 200) and np.all(images[:, :, 2:-2, 0] < 40)


def test_stretch_resize_keeps_the_whole_image(wide):
    images, _ = collect(make_datasets(wide, image_size=20, batch_size=8, resize="stretch").test)
    assert np.all(images[:, 10, 1, 0] > 200) and np.all(images[:, 10, -2, 2] > 200)  # red left, blue right


def test_jpeg_dct_downscaling_matches_a_full_resolution_resize(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((64, 64, 1))).astype(np.uint8)  # 512 x 512
    root = tmp_path / "d"
    for name in ("x", "y"):
        save(root / name / "0.jpg", smooth, "JPEG", quality=95)
        save(root / name / "1.jpg", smooth, "JPEG", quality=95)
    manifest = ingest(root, tmp_path / "w", val_fraction=0.0, test_fraction=0.5)
    images, _ = collect(make_datasets(manifest, image_size=64, batch_size=4).test)  # ratio 8: 64 x 64 decode
    reference = np.asarray(Image.fromarray(smooth).resize((64, 64), Image.BILINEAR), np.float32)
    assert np.abs(images[0] - reference)[4:-4, 4:-4].mean() < 8.0


def test_images_smaller_than_the_target_are_upscaled(tmp_path):
    root = tmp_path / "d"
    for name, colour in (("x", (200, 30, 30)), ("y", (30, 30, 200))):
        for i in range(3):
            save(root / name / f"{i}.jpg", np.full((10, 14, 3), colour, np.uint8), "JPEG", quality=95)
    manifest = ingest(root, tmp_path / "w", val_fraction=0.0, test_fraction=0.0)
    for augment in ("none", "light"):
        images, labels = collect(make_datasets(manifest, image_size=32, batch_size=4, augment=augment).train)
        assert images.shape == (6, 32, 32, 3)
        reds = images[:, 16, 16, 0] > images[:, 16, 16, 2]
        assert reds.tolist() == (labels.argmax(1) == 0).tolist()


def test_normalised_copies_flow_through_tf_data(tmp_path):
    root = tmp_path / "d"
    from PIL import Image as I

    for i in range(3):
        I.new("CMYK", (24, 24), (0, 255, 255, 0)).save(
            root / "red" / f"{i}.jpg" if (root / "red").mkdir(parents=True, exist_ok=True) is None else None,
            "JPEG",
            quality=95,
        )
        frames = [I.new("RGB", (24, 24), (0, 0, 255)), I.new("RGB", (24, 24), (255, 255, 0))]
        (root / "blue").mkdir(parents=True, exist_ok=True)
        frames[0].save(root / "blue" / f"{i}.gif", save_all=True, append_images=frames[1:])
    manifest = ingest(root, tmp_path / "w", val_fraction=0.0, test_fraction=0.5)
    images, labels = collect(make_datasets(manifest, image_size=16, batch_size=4).plain("train"))
    for image, label in zip(images, labels.argmax(1), strict=True):
        colour = image[8, 8]
        if manifest.classes[label] == "red":
            assert colour[0] > 200 and colour[1] < 60
        else:
            assert colour[2] > 200 and colour[0] < 60


@pytest.mark.parametrize("augment, cache", [("light", "none"), ("light", "memory"), ("none", "none")])
def test_training_skips_a_file_damaged_after_ingest_instead_of_crashing(coded, augment, cache):
    victim = coded.split_records("train")[0]
    Path(victim.path).write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupted between ingest and training
    ds = make_datasets(coded, image_size=16, batch_size=8, augment=augment, cache=cache)
    images, labels = collect(ds.train)
    assert images.shape[0] == len(coded.split_records("train")) - 1 and np.allclose(labels.sum(1), 1.0)


def test_small_split_can_be_empty_without_errors(tmp_path):
    root = tmp_path / "d"
    for name in ("a", "b"):
        for i in range(2):
            save(root / name / f"{i}.png", np.full((8, 8, 3), 100, np.uint8))
    manifest = ingest(root, tmp_path / "w")
    ds = make_datasets(manifest, image_size=8, batch_size=4)
    assert manifest.split_sizes()["test"] == 0 and list(ds.test) == [] and ds.steps("test") == 0


@pytest.mark.parametrize("cache", ["none", "memory", "file"])
def test_cache_modes_give_the_same_evaluation_tensors(coded, tmp_path, cache):
    reference, _ = collect(make_datasets(coded, image_size=16, batch_size=4, cache="none").test)
    setting = str(tmp_path / "cache" / "c") if cache == "file" else cache
    if cache == "file":
        (tmp_path / "cache").mkdir()
    ds = make_datasets(coded, image_size=16, batch_size=4, cache=setting, augment="light")
    for _ in range(2):
        assert np.array_equal(collect(ds.test)[0], reference)
    train, _ = collect(ds.train)
    assert train.shape == (18, 16, 16, 3)
    if cache == "file":
        assert list((tmp_path / "cache").iterdir())


def test_options_for_determinism_and_distribution(coded):
    ds = make_datasets(coded, image_size=8, batch_size=4, deterministic=False, shard_policy="data")
    assert ds.train.options().deterministic is False and ds.test.options().deterministic is True
    policy = tf.data.experimental.AutoShardPolicy.DATA
    assert ds.train.options().experimental_distribute.auto_shard_policy == policy
    assert ds.val.options().experimental_distribute.auto_shard_policy == policy
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = next(iter(strategy.experimental_distribute_dataset(ds.test)))
    assert x.shape == (3, 8, 8, 3) and y.shape == (3, 3)  # the 3 test images (one per class)


def test_bad_dataset_options_are_refused():
    with pytest.raises(ValueError, match=r"unknown augmentation preset 'heavy'.*none, light, standard, strong"):
        DatasetConfig(augment="heavy")
    with pytest.raises(ValueError, match="resize"):
        DatasetConfig(resize="squash")
    with pytest.raises(ValueError, match="shard_policy"):
        DatasetConfig(shard_policy="hosts")


# ------------------------------------------------------------------ augmentation presets
def distinct_batch(n: int = 8, size: int = 24, classes: int = 4):
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 255, (n, size, size, 3)), tf.float32)
    labels = tf.one_hot(np.arange(n) % classes, classes)
    return images, labels


def test_presets_are_the_documented_five():
    assert list(AUGMENT_PRESETS) == ["none", "light", "standard", "strong", "autoaugment"]
    assert get_preset("none").crop_scale is None and not get_preset("none").flip
    assert batch_augmenter(get_preset("none")) is None and batch_augmenter(get_preset("light")) is None


@pytest.mark.parametrize("name", ["standard", "strong"])
def test_batch_augmentation_changes_images_and_keeps_labels_valid(name):
    images, labels = distinct_batch()
    augment = batch_augmenter(get_preset(name), seed=0)
    changed = 0
    for step in range(4):
        out_images, out_labels = augment(images, labels, tf.constant(0.25 if step % 2 else 0.75))
        out_images, out_labels = out_images.numpy(), out_labels.numpy()
        assert out_images.shape == images.shape and out_images.dtype == np.float32
        assert out_images.min() >= 0.0 and out_images.max() <= 255.0
        assert np.allclose(out_labels.sum(axis=1), 1.0, atol=1e-5) and out_labels.min() >= 0.0
        changed += not np.allclose(out_images, images.numpy())
        if name != "strong":
            assert np.array_equal(out_labels, labels.numpy())  # no mixing below "strong"
    assert changed >= 3


@pytest.fixture
def textured(tmp_path):
    """2 classes x 4 images with position-dependent content, so crops and flips show."""
    root = tmp_path / "tex"
    rng = np.random.default_rng(0)
    for name in ("p", "q"):
        for i in range(4):
            save(root / name / f"{i}.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return ingest(root, tmp_path / "work", val_fraction=0.0, test_fraction=0.0)


@pytest.mark.parametrize("name", list(AUGMENT_PRESETS))
def test_each_preset_changes_training_images_and_keeps_labels_valid(textured, name):
    ds = make_datasets(textured, image_size=24, batch_size=8, augment=name)
    plain, plain_labels = collect(ds.plain("train"))
    for _epoch in range(2):
        images, labels = collect(ds.train)
        assert images.shape == (8, 24, 24, 3) and images.min() >= 0.0 and images.max() <= 255.0
        assert np.allclose(labels.sum(axis=1), 1.0, atol=1e-5) and labels.min() >= 0.0
        unchanged = sum(any(np.allclose(image, p, atol=1e-3) for p in plain) for image in images)
        if name == "none":
            assert unchanged == 8  # only shuffled
            assert sorted(labels.argmax(1).tolist()) == sorted(plain_labels.argmax(1).tolist())
        else:
            assert unchanged <= 2  # a full-size crop without flip can happen, rarely
        if name != "strong":
            assert set(np.unique(labels)) == {0.0, 1.0}


def test_strong_preset_mixes_labels_with_mixup_and_cutmix():
    images, labels = distinct_batch()
    augment = batch_augmenter(get_preset("strong"), seed=0)
    for choice in (0.25, 0.75):  # < 0.5: MixUp, otherwise CutMix
        soft = np.concatenate([augment(images, labels, tf.constant(choice))[1].numpy() for _ in range(3)])
        assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-5)
        assert ((soft > 0.01) & (soft < 0.99)).any()  # some rows mix two classes


def test_stretch_resize_still_flips_training_images(textured):
    ds = make_datasets(textured, image_size=24, batch_size=8, augment="light", resize="stretch")
    plain = collect(ds.plain("train"))[0]
    flipped = kept = 0
    for _ in range(3):
        for image in collect(ds.train)[0]:
            kept += any(np.allclose(image, p, atol=1e-3) for p in plain)
            flipped += any(np.allclose(image, p[:, ::-1], atol=1e-3) for p in plain)
    assert kept + flipped == 24 and flipped >= 4 and kept >= 4


def test_evaluation_datasets_are_never_augmented(coded):
    for name in ("light", "strong"):
        ds = make_datasets(coded, image_size=16, batch_size=8, augment=name)
        for split in ("val", "test"):
            images, labels = collect(getattr(ds, split))
            assert images[:, 8, 8, 0].round().astype(int).tolist() == [
                grey_of(r.path) for r in coded.split_records(split)
            ]
            assert set(np.unique(labels)) == {0.0, 1.0}
