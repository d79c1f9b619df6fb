"""Relabel from an evaluation: the images behind a confusion-matrix cell, reviewed by the user, as findings.

The app's Evaluate section shows the images of a (true, predicted) cell with the audit's keep / drop / relabel
choice. `review_findings` writes those choices in the findings.json format (`workbench.audit.findings`, as
label errors whose suggestion is the predicted class), so `workbench.audit.apply.apply_findings` turns them into
a dataset version exactly as it does an audit's: the user's files are never touched.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.audit.findings import FINDINGS_FILE, FORMAT, VERSION


def cell_images(report: dict[str, Any], records: list, true: str, predicted: str) -> list[dict[str, Any]]:
    """The images of the report's (`true`, `predicted`) cell, most confident prediction first: `{path, true,
    predicted, confidence}`. `records` are the evaluated split's manifest records in row order
    (`Manifest.split_records`), which give each row its file and true label."""
    index = {name: i for i, name in enumerate(report["classes"])}
    rows = report.get("predicted_index")
    if rows is None or len(rows) != len(records):
        raise ValueError(
            "the evaluation report has no per-image predictions for these images (it predates them, or the "
            "split changed); press Evaluate to evaluate the run again"
        )
    confidence = report["predicted_probability"]
    picked = [
        i
        for i, (record, p) in enumerate(zip(records, rows, strict=True))
        if record.label == true and p == index[predicted]
    ]
    picked.sort(key=lambda i: -confidence[i])
    return [
        {"path": records[i].path, "true": true, "predicted": predicted, "confidence": confidence[i]} for i in picked
    ]


def review_findings(
    manifest_path: str | os.PathLike,
    classes: list[str],
    images: list[dict[str, Any]],
    actions: Mapping[str, str],
    out: str | os.PathLike,
) -> Path:
    """Write `out`/findings.json: each reviewed image of `images` (`cell_images` entries) as a label-error item
    whose action is `actions[path]` (keep, drop or relabel to its predicted class). Returns the file's path."""
    from pipelines.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for n, image in enumerate(images):
        action = actions.get(image["path"], "keep")
        if action not in ("keep", "drop", "relabel"):
            raise ValueError(f"{image['path']}: action {action!r}; use keep, drop or relabel")
        items.append(
            {
                "id": f"review-{n}",
                "file": os.path.basename(image["path"]),
                "path": image["path"],
                "label": image["true"],
                "suggested": image["predicted"],
                "relabel_to": image["predicted"],
                "suggested_probability": image["confidence"],
                "action": action,
                "suggested_action": "keep",  # a person chose each action: nothing is suggested
            }
        )
    findings = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "origin": "evaluation review",
        "manifest": os.path.relpath(Path(manifest_path).resolve(), out.resolve()),
        "classes": list(classes),
        "duplicates": [],
        "label_errors": {"status": "ok", "message": "", "items": items},
        "outliers": {"items": []},
    }
    path = out / FINDINGS_FILE
    atomic_write_text(path, json.dumps(findings, indent=1, ensure_ascii=False))
    return path
