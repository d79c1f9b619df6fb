"""The backbone's pooled features of every usable image, computed once and cached beside the findings.

The audit reads the same features phase 1 of training trains its head on (`workbench.engine.features`:
`extract_features` over `make_datasets(...).plain(split)`, stored with `save_cache`), for all three splits.
The cache file is keyed by the manifest's content (relative paths, byte sizes, labels, splits, pixel sizes), the variant, its weights
and the image size, so a second audit of unchanged data reads them back instead of running the backbone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pipelines.manifest import SPLITS, Manifest, Record

FEATURES_FILE = "features.npz"


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """`x[i]` is the pooled feature vector of `records[i]`; records are train, then val, then test, in manifest order."""

    records: list[Record]
    x: np.ndarray  # (N, D) float32
    cached: bool  # read from the cache rather than computed


def audit_records(manifest: Manifest) -> list[Record]:
    """Every usable record, split by split in manifest order: the row order of every array of the audit."""
    return [r for split in SPLITS for r in manifest.split_records(split)]


def manifest_digest(manifest: Manifest) -> str:
    """A digest of what the features depend on in the data: each usable file's path relative to the data (so a
    zip extracted again into a new folder keeps its key), byte size, label, split and pixel size."""
    h = hashlib.sha256()
    for r in audit_records(manifest):
        size = os.stat(r.source_path).st_size if os.path.exists(r.source_path) else -1
        h.update(json.dumps([manifest.display_path(r), size, r.label, r.split, r.width, r.height]).encode())
    return h.hexdigest()


def cache_key(manifest: Manifest, variant: str, weights: str, image_size: int) -> dict:
    return {
        "manifest": manifest_digest(manifest),
        "variant": variant,
        "weights": weights,
        "image_size": image_size,
        "splits": list(SPLITS),
    }


def audit_features(
    manifest: Manifest,
    cache_dir: str | Path,
    *,
    variant: str = "lite0",
    weights: str = "imagenet",
    image_size: int | None = None,
    batch_size: int = 64,
) -> FeatureSet:
    """The pooled features of every usable image (`audit_records` order), from `cache_dir/features.npz` when it
    holds them for this key, else computed with the variant's frozen backbone and saved there."""
    from workbench.engine.features import load_cache, save_cache
    from workbench.models import get_variant

    records = audit_records(manifest)
    size = image_size or get_variant(variant).resolution
    key = cache_key(manifest, variant, weights, size)
    path = Path(cache_dir) / FEATURES_FILE
    cache = load_cache(path, key)
    if cache is not None:
        return FeatureSet(records, cache["x"], cached=True)
    x = compute_features(manifest, variant=variant, weights=weights, image_size=size, batch_size=batch_size)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    save_cache(path, key, {"x": x})
    return FeatureSet(records, x, cached=False)


def compute_features(manifest: Manifest, *, variant: str, weights: str, image_size: int, batch_size: int) -> np.ndarray:
    """One pass of the frozen backbone over the plain (un-augmented, manifest-order) pipeline of each split."""
    from pipelines import make_datasets
    from workbench.engine.features import extract_features
    from workbench.models import build_model
    from workbench.models.surgery import feature_extractor

    model = build_model(
        variant,
        num_classes=manifest.num_classes,
        weights=None if weights == "none" else weights,
        input_shape=(image_size, image_size, 3),
    )
    extractor = feature_extractor(model)
    datasets = make_datasets(manifest, image_size=image_size, batch_size=batch_size, augment="none", cache="none")
    # One pipeline over the three splits, so the extraction function is traced once (plus the last batch).
    splits = [datasets.plain(split) for split in SPLITS if manifest.split_records(split)]
    pipeline = splits[0]
    for more in splits[1:]:
        pipeline = pipeline.concatenate(more)
    x, _ = extract_features(extractor, pipeline)
    return x.astype(np.float32)
