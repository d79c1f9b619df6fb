"""The embedded sample dataset: real images shipped inside the package (see sample_data/README.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dataset_path() -> Path:
    """The folder of class folders of the embedded sample (5 CIFAR-10 classes, 32x32 PNG)."""
    path = Path(str(resources.files("pipelines") / "sample_data"))
    if not path.is_dir():
        raise FileNotFoundError(f"the embedded sample dataset is missing at {path}; reinstall the package")
    return path
