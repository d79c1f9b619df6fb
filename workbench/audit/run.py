"""`run_audit`: ingest the data, read every image once, compute (or reuse) the features, find, write findings."""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workbench.audit import duplicates as dup
from workbench.audit import findings as fmt
from workbench.audit import label_errors as le
from workbench.audit import outliers as out_mod
from workbench.audit.features import FEATURES_FILE, audit_features
from workbench.audit.scan import scan_images
from workbench.audit.stats import dataset_stats

MANIFEST_FILE = "manifest.json"


def run_audit(
    data: Any = None,
    out: str | os.PathLike | None = None,
    *,
    variant: str = "lite0",
    weights: str = "imagenet",
    image_size: int | None = None,
    batch_size: int = 64,
    max_hamming: int = dup.DEFAULT_MAX_HAMMING,
    min_correlation: float = dup.DEFAULT_MIN_CORRELATION,
    max_rms: float = dup.DEFAULT_MAX_RMS,
    outlier_k: int = out_mod.DEFAULT_K,
    outlier_mads: float = out_mod.DEFAULT_MADS,
    label_c: float = le.DEFAULT_C,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **ingest_options: Any,
) -> dict[str, Any]:
    """Audit `data` (anything `pipelines.ingest` reads) into `out` (findings.json, summary.txt, manifest.json,
    features.npz); returns the findings. `ingest_options`: IngestConfig fields (fractions, group_by, ...)."""
    from pipelines import ingest
    from workbench.models import get_variant

    say = progress or (lambda _msg: None)
    out = Path(out) if out is not None else fmt.default_out(data)
    if (out / "config.yaml").exists():
        raise ValueError(f"{out} holds a training run (config.yaml); give the audit its own --out folder")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    manifest = ingest(data, out, seed=seed, **ingest_options)
    timings["ingest"] = time.perf_counter() - t
    if manifest.multi_label:
        # Confident learning, the outliers' class distances and --apply's relabelling all take one label per image.
        raise ValueError(
            f"{data}: multi-label data (a labels file) cannot be audited yet; audit the images as class folders, "
            "or check the label file's rows with `workbench inspect`"
        )
    size = image_size or get_variant(variant).resolution

    say(f"reading {len(manifest.usable())} images (hashes, colour)")
    t = time.perf_counter()
    fs_records = [r for split in ("train", "val", "test") for r in manifest.split_records(split)]
    scan = scan_images([r.source_path for r in fs_records])
    timings["scan"] = time.perf_counter() - t

    say(f"backbone features ({variant}, {size} px; cached in {out / FEATURES_FILE})")
    t = time.perf_counter()
    feats = audit_features(manifest, out, variant=variant, weights=weights, image_size=size, batch_size=batch_size)
    timings["features"] = time.perf_counter() - t
    records = feats.records
    labels = np.array([manifest.label_index(r.label) for r in records])
    unit = dup.centred_unit(feats.x)

    say("duplicates")
    t = time.perf_counter()
    groups = dup.find_duplicates(
        scan.hashes,
        scan.pixels,
        unit,
        scan.thumbs,
        max_hamming=max_hamming,
        min_correlation=min_correlation,
        max_rms=max_rms,
    )
    timings["duplicates"] = time.perf_counter() - t

    say("label errors (cross-validated heads, confident learning)")
    t = time.perf_counter()
    try:
        le.check_enough(labels, manifest.classes)
        probabilities = le.out_of_sample_probabilities(feats.x, labels, c=label_c, seed=seed)
        issues, label_status = le.find_label_issues(labels, probabilities), {"status": "ok", "message": ""}
    except le.TooFewImages as exc:
        issues, label_status = [], {"status": "skipped", "message": str(exc)}
    timings["label_errors"] = time.perf_counter() - t

    say("outliers")
    t = time.perf_counter()
    noisy = out_mod.noise_like(scan.pixels, scan.blank)
    outliers, _scores = out_mod.find_outliers(
        unit, labels, manifest.num_classes, k=outlier_k, mads=outlier_mads, blank=scan.blank, noisy=noisy
    )
    threshold = out_mod.robust_threshold(_scores, outlier_mads)
    timings["outliers"] = time.perf_counter() - t

    def entry(i: int) -> dict[str, Any]:
        r = records[i]
        return {"file": manifest.display_path(r), "path": r.path, "label": r.label, "split": r.split}

    findings: dict[str, Any] = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": manifest.source,
        "root": manifest.root,
        "manifest": MANIFEST_FILE,
        "classes": list(manifest.classes),
        "settings": {
            "variant": variant,
            "weights": weights,
            "image_size": size,
            "max_hamming": max_hamming,
            "candidates_k": dup.DEFAULT_K,
            "min_correlation": min_correlation,
            "max_rms": max_rms,
            "margin": dup.DEFAULT_MARGIN,
            "outlier_k": outlier_k,
            "outlier_mads": outlier_mads,
            "label_folds": le.FOLDS,
            "label_c": label_c,
            "seed": seed,
        },
        "features": {"file": FEATURES_FILE, "cached": feats.cached, "dim": int(feats.x.shape[1])},
        "duplicates": [_group(g, entry, records) for g in groups],
        "label_errors": label_status
        | {
            "items": [
                entry(it.index)
                | {
                    "suggested": manifest.classes[it.suggested],
                    "quality": round(it.quality, 5),
                    "suggested_probability": round(it.suggested_probability, 4),
                    "relabel_to": manifest.classes[it.suggested],
                    "action": "keep",
                    "suggested_action": "relabel" if it.suggested_probability >= 0.5 else "drop",
                }
                for it in issues
            ]
        },
        "outliers": {
            "threshold": round(float(threshold), 5),
            "k": outlier_k,
            "items": [
                entry(o.index)
                | {
                    "score": round(o.score, 5),
                    "nearest_class": manifest.classes[o.nearest_class],
                    "class_distance": round(o.class_distance, 5),
                    "blank": bool(scan.blank[o.index]),
                    "noise_like": bool(noisy[o.index]),
                    "action": "keep",
                    "suggested_action": "drop",
                }
                for o in outliers
            ],
        },
        "stats": dataset_stats(records, manifest.classes, size, scan.grayscale, scan.blank),
    }
    # Row order of the scan is the records' (both list train, val, test in manifest order).
    assert [r.path for r in fs_records] == [r.path for r in records]
    for kind in ("duplicates", "label_errors", "outliers"):
        for n, item in enumerate(findings[kind] if kind == "duplicates" else findings[kind]["items"], 1):
            item["id"] = f"{kind.removesuffix('s').replace('_error', '')}-{n:04d}"
    findings["summary"] = fmt.summary(findings)
    findings["timings"] = {k: round(v, 2) for k, v in timings.items()}
    write_findings(out, findings)
    return findings


def _group(g: dup.DuplicateGroup, entry, records) -> dict[str, Any]:
    """A duplicate group as findings.json holds it; the suggestion keeps one member and drops the others.

    The member kept is the one in the evaluation split (test, then val, then train): a test image with a copy
    in train stays a test image, and the model no longer sees it during training."""
    splits = [records[i].split for i in g.members]
    rank = {"test": 0, "val": 1, "train": 2}
    keep = min(range(len(g.members)), key=lambda k: (rank.get(splits[k], 3), k))
    return {
        "kind": g.kind,
        "leakage": dup.spans_splits(splits),
        "splits": sorted(set(splits)),
        "max_hamming": g.max_hamming,
        "min_cosine": g.min_cosine,
        "min_correlation": g.min_correlation,
        "max_rms": g.max_rms,
        "evidence": list(g.evidence),
        "members": [
            entry(i) | {"action": "keep", "suggested_action": "keep" if k == keep else "drop"}
            for k, i in enumerate(g.members)
        ],
    }


def write_findings(out: Path, findings: dict[str, Any]) -> Path:
    from pipelines.files import atomic_write_text

    path = atomic_write_text(out / fmt.FINDINGS_FILE, json.dumps(findings, indent=1, ensure_ascii=False))
    atomic_write_text(out / fmt.SUMMARY_FILE, fmt.format_text(findings, limit=1_000_000) + "\n")
    return path
