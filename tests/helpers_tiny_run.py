"""One tiny trained run directory shared by the evaluation, explain, export and predict tests.

It follows the run-directory contract of docs/ARCHITECTURE.md (model.keras, labels.txt, manifest.json,
config.yaml) without the engine: generated images of three colour-coded classes, ingested by
`pipelines.ingest`, and a φ = -8 EfficientNet trained for a few epochs with `model.fit`. It is built
once per test process (about half a minute on 2 cores) and cached, because every test only reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("blue", "green", "red")
RESOLUTION = 32
IMAGES_PER_CLASS = 30
_CACHE: dict[str, Path] = {}


def make_image_folder(root: Path, per_class: int = IMAGES_PER_CLASS, seed: int = 0) -> Path:
    """JPEG files in class folders: the class's colour channel is boosted over a random per-image colour cast.

    The casts overlap between classes (about one image in seven looks like another class), so a trained
    model still makes a few confident mistakes for the misclassified report to find.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for channel, name in zip((2, 1, 0), CLASSES, strict=True):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = int(rng.integers(28, 48))  # varied sizes: the crop and resize path is exercised
            cast = rng.uniform(0, 100, 3)
            cast[channel] += 60
            pixels = cast + rng.uniform(-30, 30, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{name}_{i:03d}.jpg", quality=92)
    return root


def build_tiny_run(base: Path) -> Path:
    """Create and train the tiny run under `base`; returns the run directory."""
    import keras
    import yaml

    from pipelines import ingest
    from workbench.models import build_model
    from workbench.serving.imaging import load_files

    data = make_image_folder(base / "images")
    run_dir = base / "run"
    manifest = ingest(str(data), workdir=run_dir)
    keras.utils.set_random_seed(0)
    model = build_model("phi=-8", num_classes=len(manifest.classes), input_shape=(RESOLUTION, RESOLUTION, 3))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Inference-mode BatchNormalization (as in the engine's fine-tuning): the moving statistics
            # would need hundreds of steps to settle, and this run trains for about forty.
            layer.trainable = False
    records = manifest.split_records("train")
    images = load_files([r.source_path for r in records], RESOLUTION)
    labels = keras.utils.to_categorical(manifest.split_labels("train"), len(manifest.classes))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, batch_size=16, epochs=8, verbose=0)
    model.save(run_dir / "model.keras")
    (run_dir / "labels.txt").write_text("\n".join(manifest.classes) + "\n")
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"variant": "phi=-8", "image_size": RESOLUTION, "weights": None, "epochs": 8, "batch_size": 16})
    )
    return run_dir


def tiny_run(tmp_path_factory) -> Path:
    """The shared run directory (built on first use in this process)."""
    if "run" not in _CACHE:
        _CACHE["run"] = build_tiny_run(tmp_path_factory.mktemp("tiny_run"))
    return _CACHE["run"]


def evaluated(tmp_path_factory) -> dict:
    """`evaluate` of the tiny run's test split (run once per process); returns the report."""
    from workbench.evaluation import evaluate

    if "eval" not in _CACHE:
        _CACHE["eval"] = evaluate(tiny_run(tmp_path_factory))
    return _CACHE["eval"]


def exported(tmp_path_factory, format: str) -> Path:
    """The evaluated tiny run exported in `format` (each format once per process); returns export's path."""
    from workbench.serving.export import export

    key = f"export:{format}"
    if key not in _CACHE:
        evaluated(tmp_path_factory)  # so the model card carries the evaluation metrics
        out = tmp_path_factory.mktemp("exports") / "tiny"
        _CACHE[key] = export(tiny_run(tmp_path_factory), format, out=out)
    return _CACHE[key]


def split_images(tmp_path_factory) -> list[str]:
    """The files of the tiny run's test split (readable JPEGs), in manifest order."""
    from pipelines import Manifest

    manifest = Manifest.load(tiny_run(tmp_path_factory) / "manifest.json")
    return [r.path for r in manifest.split_records("test")]
