"""Multi-label ingest: a CSV or JSONL of `image,labels` rows next to a folder of images.

Specification: the rows are read and checked (bad rows are refused naming their line), every listed image is
checked like any other, label sets go into the manifest (`Record.labels`, `Manifest.multi_label`), and the splits
come from iterative stratification, so every label appears in every split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_multilabel import LABELS, make_multilabel_data

from pipelines import DataError, Manifest, ingest
from pipelines.splits import iterative_assign


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return make_multilabel_data(tmp_path / "data", n=40)


# ------------------------------------------------------------------ reading the label file
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_label_sets_from_csv_or_jsonl_go_into_the_manifest(tmp_path, fmt):
    label_file = make_multilabel_data(tmp_path / "data", n=40, fmt=fmt)
    manifest = ingest(str(label_file), workdir=tmp_path / "run")
    assert manifest.multi_label and manifest.classes == list(LABELS)
    rows = {Path(r.path).name: r.labels for r in manifest.records}
    assert len(rows) == 40 and all(isinstance(labels, tuple) for labels in rows.values())
    reloaded = Manifest.load(tmp_path / "run" / "manifest.json")
    assert reloaded.multi_label and reloaded.records == manifest.records
    targets = manifest.split_targets("train")
    assert targets.dtype == np.float32 and targets.shape == (len(manifest.split_records("train")), 3)
    assert manifest.class_counts()["red"] == sum("red" in r.labels for r in manifest.records)


def test_labels_as_a_json_list_in_a_csv_field_and_empty_sets_are_counted(data, tmp_path):
    write(
        data,
        'image,labels\nimages/img_000.png,"[""red"", ""blue""]"\nimages/img_001.png,\n'
        + "".join(f"images/img_{i:03d}.png,green;red\n" for i in range(2, 40)),
    )
    manifest = ingest(str(data), workdir=tmp_path / "run")
    by_name = {Path(r.path).name: r.labels for r in manifest.records}
    assert by_name["img_000.png"] == ("red", "blue") and by_name["img_001.png"] == ()
    report = manifest.report()
    assert report["multi_label"] and report["empty_label_sets"] == 1
    assert "1 image(s) with no label" in manifest.format_report()
    assert any("fewer than 5 images" in w and "'blue' (1)" in w for w in manifest.warnings)


def test_images_without_a_row_are_named_and_ignored(data, tmp_path):
    lines = data.read_text().splitlines()
    write(data, "\n".join(lines[:-2]) + "\n")  # the last two images lose their rows
    manifest = ingest(str(data), workdir=tmp_path / "run")
    assert len(manifest.records) == 38
    (warning,) = [w for w in manifest.warnings if "have no row" in w]
    assert "images/img_038.png" in warning and "images/img_039.png" in warning


def test_a_group_aware_split_of_multi_label_data_is_refused_not_silently_ignored(data, tmp_path):
    with pytest.raises(DataError, match="not supported for multi-label"):
        ingest(str(data), workdir=tmp_path / "run", group_by=r"^(img_\d\d)")


def test_single_label_manifests_are_written_as_before(tmp_path):
    from PIL import Image

    for name in ("cats", "dogs"):
        for i in range(4):
            (tmp_path / "d" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(tmp_path / "d" / name / f"{i}.png")
    ingest(str(tmp_path / "d"), workdir=tmp_path / "run")
    data = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "multi_label" not in data and all("labels" not in r for r in data["records"])


# ------------------------------------------------------------------ bad label files name the line
@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "images/img_000.png,red\nimages/img_000.png,blue\n",
            "line 3: the image 'images/img_000.png' is listed again (first on line 2)",
        ),
        ("images/img_000.png,red\nimages/nope.png,blue\n", "line 3: images/nope.png"),
        ('images/img_000.png,"[""a;b""]"\n', "line 2: the label 'a;b' contains the separator ';'"),
        ("images/img_000.png,red;;blue\n", "line 2: the labels 'red;;blue' hold an empty label"),
        ("images/img_000.png,red,blue\n", "line 2: 3 fields where 'image,labels' has 2"),
        ("images/img_000.png,red;red\n", "line 2: the label(s) 'red' are listed twice"),
        ("../outside.png,red\n", "line 2: the image path '../outside.png' leaves the folder"),
    ],
)
def test_bad_rows_are_refused_naming_the_line(data, tmp_path, rows, message):
    write(data, "image,labels\n" + rows)
    with pytest.raises(DataError, match=None) as info:
        ingest(str(data), workdir=tmp_path / "run")
    assert message in str(info.value) and str(data) in str(info.value)


def test_a_bad_header_or_jsonl_line_is_refused_naming_the_line(data, tmp_path):
    write(data, "file,tags\nimages/img_000.png,red\n")
    with pytest.raises(DataError, match="line 1: the header"):
        ingest(str(data), workdir=tmp_path / "run")
    jsonl = write(data.with_suffix(".jsonl"), '{"image": "images/img_000.png", "labels": ["red"]}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not a JSON object"):
        ingest(str(jsonl), workdir=tmp_path / "run2")


# ------------------------------------------------------------------ iterative stratification
def test_iterative_stratification_puts_every_label_in_every_split():
    rng = np.random.default_rng(3)
    # 200 examples, 8 labels of very different frequencies (the rarest on 4 examples).
    frequencies = [0.5, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02]
    sets = [[k for k, f in enumerate(frequencies) if rng.random() < f] for _ in range(200)]
    sets[:4] = [[*s, 7] for s in sets[:4]]
    keys = [f"img_{i}.png" for i in range(200)]
    splits = iterative_assign(sets, keys, num_labels=8, seed=0, val_fraction=0.15, test_fraction=0.15)
    assert splits == iterative_assign(sets, keys, num_labels=8, seed=0, val_fraction=0.15, test_fraction=0.15)
    for k in range(8):
        holders = [s for s, labels in zip(splits, sets, strict=True) if k in labels]
        if len(holders) >= 3:
            assert {"train", "val", "test"} <= set(holders), (k, holders)
    sizes = {s: splits.count(s) for s in ("train", "val", "test")}
    assert abs(sizes["val"] - 30) <= 4 and abs(sizes["test"] - 30) <= 4  # the split sizes still follow the fractions


def test_iterative_stratification_keeps_label_proportions_closer_than_a_random_split():
    rng = np.random.default_rng(1)
    sets = [[k for k in range(6) if rng.random() < 0.08 * (k + 1)] for _ in range(300)]
    keys = [str(i) for i in range(300)]
    splits = np.array(iterative_assign(sets, keys, num_labels=6, seed=0, val_fraction=0.2, test_fraction=0.2))
    multi_hot = np.array([[k in s for k in range(6)] for s in sets], float)

    def deviation(assignment):
        overall = multi_hot.mean(0)
        return max(np.abs(multi_hot[assignment == s].mean(0) - overall).max() for s in ("val", "test"))

    random_split = np.array(rng.permutation(["train"] * 180 + ["val"] * 60 + ["test"] * 60))
    assert deviation(splits) < deviation(random_split)


def test_an_audit_of_multi_label_data_is_refused_with_what_to_do(data, tmp_path):
    from workbench.audit import run_audit

    with pytest.raises(ValueError, match=r"multi-label data .* cannot be audited yet"):
        run_audit(str(data), tmp_path / "audit")
