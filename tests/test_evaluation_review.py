"""Relabel from an evaluation: the images behind a confusion-matrix cell become findings, then a dataset version.

`workbench.audit.review` is what the app's Evaluate section calls when a user clicks a cell, chooses keep, drop
or "relabel as <predicted>" for its images, and makes a version. The version is the audit's: links, never a
change to the user's files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import ingest
from workbench.audit.apply import apply_findings
from workbench.audit.findings import load_findings
from workbench.audit.review import cell_images, review_findings


def photo_folder(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for c, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / c / f"{c}{i}.png")
    return root


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def report_for(records, predicted: list[str], confidence: list[float]) -> dict:
    classes = ["cat", "dog"]
    return {
        "classes": classes,
        "predicted_index": [classes.index(p) for p in predicted],
        "predicted_probability": confidence,
    }


def test_a_cell_holds_the_images_of_that_true_and_predicted_class_most_confident_first(tmp_path):
    manifest = ingest(photo_folder(tmp_path / "data"), tmp_path / "run", val_fraction=0.0, test_fraction=0.5)
    records = manifest.split_records("test")
    predicted = ["dog" if i % 2 else r.label for i, r in enumerate(records)]  # every other image wrong
    confidence = [0.5 + 0.01 * i for i in range(len(records))]
    report = report_for(records, predicted, confidence)

    cats_as_dogs = cell_images(report, records, "cat", "dog")
    expected = [r.path for r, p in zip(records, predicted, strict=True) if r.label == "cat" and p == "dog"]
    assert sorted(i["path"] for i in cats_as_dogs) == sorted(expected) and expected
    assert [i["confidence"] for i in cats_as_dogs] == sorted((i["confidence"] for i in cats_as_dogs), reverse=True)
    assert cell_images(report, records, "dog", "cat") == []  # no dog was predicted a cat

    with pytest.raises(ValueError, match="press Evaluate"):  # a report from before per-image predictions
        cell_images({"classes": ["cat", "dog"]}, records, "cat", "dog")


def test_reviewed_choices_become_a_dataset_version_and_the_originals_are_untouched(tmp_path):
    data = photo_folder(tmp_path / "data")
    before = tree_digest(data)
    manifest = ingest(data, tmp_path / "run", val_fraction=0.0, test_fraction=0.5)
    records = manifest.split_records("test")
    cats = [r for r in records if r.label == "cat"]
    images = [{"path": r.path, "true": "cat", "predicted": "dog", "confidence": 0.9} for r in cats[:3]]
    actions = {images[0]["path"]: "relabel", images[1]["path"]: "drop"}  # the third is kept

    findings = review_findings(tmp_path / "run" / "manifest.json", manifest.classes, images, actions, tmp_path / "rv")
    assert [i["action"] for i in load_findings(findings)["label_errors"]["items"]] == ["relabel", "drop", "keep"]
    version = apply_findings(findings, tmp_path / "v1")

    assert version.info["relabelled"] == 1 and version.info["dropped"] == 1
    assert version.info["images"] == len(manifest.usable()) - 1
    relabelled = version.path / "dog" / os.path.basename(images[0]["path"])
    assert relabelled.is_symlink() and os.path.realpath(relabelled) == os.path.realpath(images[0]["path"])
    assert not (version.path / "cat" / os.path.basename(images[1]["path"])).exists()
    assert (version.path / "cat" / os.path.basename(images[2]["path"])).is_symlink()
    assert tree_digest(data) == before

    with pytest.raises(ValueError, match="keep, drop or relabel"):
        review_findings(
            tmp_path / "run" / "manifest.json", manifest.classes, images, {images[0]["path"]: "x"}, tmp_path / "rv2"
        )
