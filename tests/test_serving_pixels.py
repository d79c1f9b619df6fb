"""Serving sees the pixels training saw, and refuses images training would have refused.

Ingest (`pipelines.images`) gives training EXIF-rotated, alpha-over-white, first-frame copies and quarantines
images over the pixel limit. `workbench.serving.imaging` does the same from the encoded bytes, with TensorFlow
ops only, for `predict` (every format), the SavedModel graph, `explain` and the app's Try-it box. Each test
is a reproduction from the hardening report of 2026-11-28 (issue 11); the finding id is in its comment.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from helpers_tiny_run import RESOLUTION, exported, tiny_run

BLUE, RED = (20, 40, 230), (230, 30, 20)


def _exif_rotated_jpeg(path, width: int = 60, height: int = 40):
    """Stored `width` x `height`, left half blue, right half red, EXIF orientation 6 (rotate 90° clockwise):
    upright, the top half is blue (the report's exif6.jpg)."""
    from PIL import Image

    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:, : width // 2], pixels[:, width // 2 :] = BLUE, RED
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path


def _transparent_png(path, size: int = 40):
    """Left half opaque red; right half fully transparent with blue stored under it (the report's alpha.png,
    with a colour under the transparent half that the model tells apart from white)."""
    from PIL import Image

    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[:, : size // 2] = (*RED, 255)
    pixels[:, size // 2 :] = (*BLUE, 0)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def _pipeline_pixels(folder, work):
    """What `evaluate` feeds the model: ingest, then `make_datasets(...).plain(split)`, in manifest order."""
    from pipelines import ingest, make_datasets

    manifest = ingest(str(folder), workdir=work, val_fraction=0.0, test_fraction=0.0)
    batches = make_datasets(manifest, RESOLUTION, 8, augment="none").plain("train")
    pixels = np.concatenate([x.numpy() for x, _ in batches])
    return [r.path for r in manifest.split_records("train")], pixels


def test_exif_rotated_jpeg_and_transparent_png_get_the_training_pixels_in_every_serving_path(
    tmp_path_factory, tmp_path
):
    # C4: predict (every format), the SavedModel and evaluate saw different pixels for these two files.
    import keras
    import tensorflow as tf

    from workbench.serving.imaging import load_files
    from workbench.serving.predict import predict

    (tmp_path / "data" / "blue").mkdir(parents=True)
    (tmp_path / "data" / "red").mkdir(parents=True)
    jpeg = _exif_rotated_jpeg(tmp_path / "data" / "blue" / "exif6.jpg")
    png = _transparent_png(tmp_path / "data" / "red" / "alpha.png")
    paths, training = _pipeline_pixels(tmp_path / "data", tmp_path / "work")
    assert paths == [str(jpeg), str(png)]

    serving = load_files(paths, RESOLUTION)  # predict's path for run directories, .keras and TFLite
    np.testing.assert_array_equal(serving[1], training[1])  # lossless: the same pixels exactly
    assert np.abs(serving[1][:, -1] - [255, 255, 255]).max() == 0  # the transparent half is white
    # The JPEG: ingest re-encoded the rotated copy (quality 95), so a few levels apart, but upright.
    assert np.abs(serving[0] - training[0]).mean() < 3
    top, bottom = serving[0][: RESOLUTION // 4].mean((0, 1)), serving[0][-RESOLUTION // 4 :].mean((0, 1))
    assert top[2] > 200 > top[0] and bottom[0] > 200 > bottom[2]  # top blue, bottom red

    model = keras.saving.load_model(tiny_run(tmp_path_factory) / "model.keras", safe_mode=True)
    evaluated = model.predict(training, verbose=0)  # what `evaluate` computes for these two files
    loaded = tf.saved_model.load(str(exported(tmp_path_factory, "savedmodel")))
    encoded = tf.constant([jpeg.read_bytes(), png.read_bytes()])
    served = loaded.signatures["serving_default"](image_bytes=encoded)["probabilities"].numpy()
    np.testing.assert_allclose(served, model.predict(serving, verbose=0), atol=1e-5)  # graph == predict's ops
    np.testing.assert_allclose(served[1], evaluated[1], atol=1e-4)
    np.testing.assert_allclose(served[0], evaluated[0], atol=0.05)
    assert served.argmax(1).tolist() == evaluated.argmax(1).tolist()
    for model_path in (
        tiny_run(tmp_path_factory),
        exported(tmp_path_factory, "savedmodel"),
        exported(tmp_path_factory, "keras"),
        exported(tmp_path_factory, "tflite"),
    ):
        results = predict(model_path, paths, top_k=3)
        for result, expected in zip(results, served, strict=True):
            probabilities = {p["index"]: p["probability"] for p in result["predictions"]}
            assert probabilities == pytest.approx({i: float(expected[i]) for i in probabilities}, abs=1e-4)


def test_every_exif_orientation_and_alpha_format_decodes_as_ingest_does(tmp_path):
    # C4: orientations 1 to 8, alpha in PNG (RGBA, LA, palette tRNS), GIF transparency and WebP alpha,
    # each compared with ingest's Pillow conversion (`to_rgb8`) of the same bytes.
    import tensorflow as tf
    from PIL import Image

    from pipelines.images import to_rgb8
    from workbench.serving.imaging import decode_rgb

    def encode(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    def ingest_pixels(data):
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(to_rgb8(image)).astype(int)

    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
        ours = decode_rgb(tf.constant(data)).numpy().astype(int)
        assert ours.shape == ingest_pixels(data).shape, orientation
        # libjpeg-turbo (TensorFlow) and Pillow's libjpeg round a few levels apart; a wrong turn is ~85.
        assert np.abs(ours - ingest_pixels(data)).mean() < 3, orientation

    rgba = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA")
    palette = rgba.convert("RGB").quantize(16)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).quantize(64) for _ in range(4)]
    cases = {
        "RGBA PNG": encode(rgba, "PNG"),
        "grey+alpha PNG": encode(rgba.convert("LA"), "PNG"),
        "palette PNG with tRNS": encode(palette, "PNG", transparency=3),
        "RGB PNG with a colour key (Pillow ignores it)": encode(rgba.convert("RGB"), "PNG", transparency=(1, 2, 3)),
        "GIF with a transparent colour": encode(palette, "GIF", transparency=3),
        "animated GIF": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=2),
        "WebP with alpha": encode(rgba, "WEBP", lossless=True),
        "BMP": encode(rgba.convert("RGB"), "BMP"),
    }
    for name, data in cases.items():
        np.testing.assert_array_equal(decode_rgb(tf.constant(data)).numpy(), ingest_pixels(data), err_msg=name)


def test_grad_cam_is_computed_on_the_picture_it_is_drawn_over(tmp_path):
    # C4: explain computed Grad-CAM on unrotated pixels and drew it over the rotated image.
    import tensorflow as tf

    from workbench.evaluation.explain import _centre_square, explain
    from workbench.models import build_model
    from workbench.serving.imaging import decode_batch

    build_model("phi=-8", num_classes=2, input_shape=(64, 64, 3), weights=None).save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("blue\nred\n")
    jpeg = _exif_rotated_jpeg(tmp_path / "exif6.jpg", width=120, height=80)
    png = _transparent_png(tmp_path / "alpha.png", size=80)
    for path in (jpeg, png):
        data = path.read_bytes()
        model_input = decode_batch(tf.constant([data]), 64).numpy()[0]
        picture = _centre_square(data)
        assert picture.shape == (80, 80, 3)
        shown = tf.image.resize(picture.astype(np.float32), [64, 64], method="bilinear").numpy()
        assert np.abs(shown - model_input).mean() < 1.5, path.name
    result = explain(tmp_path / "model.keras", jpeg, out=tmp_path / "cam.png")
    assert result["out"] == str(tmp_path / "cam.png") and (tmp_path / "cam.png").is_file()


def _png_bomb(path, side: int = 16000):
    """A valid 1-bit greyscale PNG of side x side pixels in a few tens of kilobytes: decoded to RGB it needs
    side² x 3 bytes (768 MB at 16000), the report's bomb16k.png."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = (b"\x00" + bytes((side + 7) // 8)) * side
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)))
    return path


def test_decompression_bomb_is_refused_from_its_header_by_predict_and_the_saved_model(tmp_path_factory, tmp_path):
    # A5: a 16000x16000 PNG (small file) was decoded by predict (1.57 GB RSS) and by the SavedModel graph.
    import tensorflow as tf

    from workbench.serving.imaging import MAX_PIXELS, check_image_bytes
    from workbench.serving.predict import predict

    bomb = _png_bomb(tmp_path / "bomb16k.png")
    assert bomb.stat().st_size < 100_000 and MAX_PIXELS < 16000 * 16000
    message = r"bomb16k.png: image of 16000x16000 = 256,000,000 pixels is over the limit of 89,478,485 pixels"
    for model in (tiny_run(tmp_path_factory), exported(tmp_path_factory, "keras")):
        with pytest.raises(ValueError, match=message):
            predict(model, [bomb])
    with pytest.raises(ValueError, match=message):  # what the app's Try-it box calls on an upload
        check_image_bytes(bomb.read_bytes(), "bomb16k.png")
    serve = tf.saved_model.load(str(exported(tmp_path_factory, "savedmodel"))).signatures["serving_default"]
    # The graph asserts on the IHDR size before DecodePng runs: an error, not a 768 MB decode.
    with pytest.raises(tf.errors.InvalidArgumentError, match="possible decompression bomb"):
        serve(image_bytes=tf.constant([bomb.read_bytes()]))
    ok = serve(image_bytes=tf.constant([_transparent_png(tmp_path / "ok.png").read_bytes()]))
    assert ok["probabilities"].shape == (1, 3)


def test_header_sizes_of_every_format_and_only_the_first_gif_frame_is_decoded(tmp_path):
    # A5: a 300-frame GIF decoded every frame (+0.7 GB); the header sizes feed the pixel limit.
    import tensorflow as tf
    from PIL import Image

    from workbench.serving.imaging import _gif_first_frame, image_shape

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (21, 34, 3), dtype=np.uint8))
    for fmt, options in {"JPEG": {}, "PNG": {}, "GIF": {}, "BMP": {}, "WEBP": {"lossless": True}}.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        assert [int(v) for v in image_shape(tf.constant(buffer.getvalue()))] == [21, 34], fmt
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=70)  # lossy VP8
    assert [int(v) for v in image_shape(tf.constant(buffer.getvalue()))] == [21, 34]
    frames = [Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).quantize(32) for _ in range(30)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    data = tf.constant(buffer.getvalue())
    assert tf.io.decode_gif(data).shape[0] == 30
    first = tf.io.decode_gif(_gif_first_frame(data))
    assert first.shape[0] == 1
    np.testing.assert_array_equal(first[0].numpy(), np.asarray(frames[0].convert("RGB")))
