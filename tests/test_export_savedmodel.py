"""SavedModel export: TF Serving layout, labels and model card, and serving without workbench installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers_tiny_run import RESOLUTION, evaluated, exported, split_images, tiny_run


def test_layout_labels_and_model_card(tmp_path_factory):
    version_dir = exported(tmp_path_factory, "savedmodel")
    report = evaluated(tmp_path_factory)
    assert version_dir.name == "1" and (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert (version_dir / "labels.txt").read_text().split() == ["blue", "green", "red"]
    card = json.loads((version_dir / "model_card.json").read_text())
    assert card["format"] == "savedmodel"
    assert card["model"]["variant"] == "phi=-8" and card["model"]["resolution"] == RESOLUTION
    assert card["training_data"]["num_images"] == 90 and card["training_data"]["images_per_class"]["red"] == 30
    assert card["evaluation"]["accuracy"] == report["accuracy"] and card["evaluation"]["split"] == "test"
    assert {"tensorflow", "keras", "workbench", "python"} <= set(card["versions"]) and card["created"]
    assert set(card["signatures"]) == {"serving_default", "serving_rgb"}
    markdown = (version_dir / "model_card.md").read_text()
    assert "phi=-8" in markdown and f"{report['accuracy']:.4f}" in markdown


def test_versions_increase_and_are_never_overwritten(tmp_path_factory):
    from workbench.serving.export import export

    first = exported(tmp_path_factory, "savedmodel")
    base = first.parent
    second = export(tiny_run(tmp_path_factory), "savedmodel", out=base)
    assert (first.name, second.name) == ("1", "2") and (second / "saved_model.pb").is_file()
    with pytest.raises(FileExistsError, match="immutable"):
        export(tiny_run(tmp_path_factory), "savedmodel", out=base, version=1)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no staging leftovers
    second.rename(base.parent / "version-2-removed")  # leave the shared export as the other tests expect


def test_serving_pixels_equal_the_pipelines_evaluation_path(tmp_path):
    """The bytes → pixels path in the graph is the pipelines' eval path (centre crop, DCT-scaled JPEG)."""
    from PIL import Image

    from pipelines import ingest, make_datasets
    from workbench.serving.imaging import load_files

    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            height, width = (int(v) for v in rng.integers(40, 300, 2))
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            suffix = "png" if i % 3 == 0 else "jpg"
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.{suffix}")
    manifest = ingest(str(tmp_path / "data"), workdir=tmp_path / "work", val_fraction=0.0, test_fraction=0.0)
    expected = np.concatenate([x.numpy() for x, _ in make_datasets(manifest, 36, 4, augment="none").plain("train")])
    actual = load_files([r.source_path for r in manifest.split_records("train")], 36)
    np.testing.assert_array_equal(actual, expected)


SERVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    export_dir, files = sys.argv[1], sys.argv[2:]
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    out = serve(image_bytes=tf.constant([open(f, "rb").read() for f in files]))
    rgb = loaded.signatures["serving_rgb"](images=tf.random.uniform((2, 50, 70, 3), 0, 255, seed=1))
    print(json.dumps({
        "probabilities": out["probabilities"].numpy().tolist(),
        "class_index": out["class_index"].numpy().tolist(),
        "class_name": [n.decode() for n in out["class_name"].numpy()],
        "rgb_shape": list(rgb["probabilities"].shape),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("workbench", "pipelines", "keras")),
    }))
    """
)


def test_fresh_process_with_tensorflow_only_matches_keras(tmp_path_factory, tmp_path):
    import keras

    from workbench.serving.imaging import load_files

    version_dir = exported(tmp_path_factory, "savedmodel")
    run = tiny_run(tmp_path_factory)
    files = split_images(tmp_path_factory)
    # A PNG too: serving_default takes any encoded image.
    png = tmp_path / "one.png"
    from PIL import Image

    with Image.open(files[0]) as image:
        image.save(png)
    files = [*files, str(png)]
    script = tmp_path / "serve.py"
    script.write_text(SERVE_SCRIPT)
    # Outside the repository and without PYTHONPATH: neither workbench nor pipelines is importable there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(script), str(version_dir), *files],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert not [m for m in served["modules"] if m.split(".")[0] in ("workbench", "pipelines")]

    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    expected = model.predict(load_files(files, RESOLUTION), verbose=0)
    np.testing.assert_allclose(np.asarray(served["probabilities"]), expected, atol=1e-5)
    assert served["class_index"] == expected.argmax(1).tolist()
    labels = (run / "labels.txt").read_text().split()
    assert served["class_name"] == [labels[i] for i in expected.argmax(1)]
    assert served["rgb_shape"] == [2, 3]


def test_serving_rgb_signature_resizes_any_size_like_the_bytes_path(tmp_path_factory):
    import tensorflow as tf

    version_dir = exported(tmp_path_factory, "savedmodel")
    loaded = tf.saved_model.load(str(version_dir))
    # A 2x-upscaled copy of a 32x32 image (nearest neighbour) resizes back to the same picture.
    small = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)
    large = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)
    at_size = loaded.signatures["serving_rgb"](images=tf.constant(small))["probabilities"].numpy()
    resized = loaded.signatures["serving_rgb"](images=tf.constant(large))["probabilities"].numpy()
    np.testing.assert_allclose(resized, at_size, atol=0.05)
    assert resized.argmax() == at_size.argmax()


def test_unknown_format_and_missing_run_are_refused(tmp_path_factory, tmp_path):
    from workbench.serving.export import export
    from workbench.serving.model_files import ModelFileError

    with pytest.raises(ValueError, match="unknown export format 'tfjs'"):  # not offered: README, "TF.js"
        export(tiny_run(tmp_path_factory), "tfjs")
    with pytest.raises(ModelFileError, match=r"model.keras"):
        export(tmp_path, "savedmodel")


def test_int8_export_needs_training_images(tmp_path_factory, tmp_path):
    """Without a manifest there is no training split to calibrate on: a clear error, not a silent guess."""
    import shutil

    from workbench.serving.export import export

    run = tmp_path / "run"
    shutil.copytree(tiny_run(tmp_path_factory), run, ignore=shutil.ignore_patterns("manifest.json", "eval", "data"))
    with pytest.raises(ValueError, match="calibration"):
        export(run, "tflite-int8", out=tmp_path / "out")


def test_export_folders_and_files_get_the_umask_modes(tmp_path_factory, tmp_path):
    # B4 (issue 11): SavedModel versions were staged with mkdtemp (0700), so TF Serving under another user
    # could not read them. Under umask 022 every export folder is 0755 and every file 0644.
    import stat

    from workbench.serving.export import export

    run = tiny_run(tmp_path_factory)
    previous = os.umask(0o022)
    try:
        version_dir = export(run, "savedmodel", out=tmp_path / "out")
        keras_file = export(run, "keras", out=tmp_path / "out")
    finally:
        os.umask(previous)
    for folder in (version_dir, keras_file.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
        for path in folder.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
