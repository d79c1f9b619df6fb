"""The findings.json format (version 1) and its text summary.

One JSON object, written by `workbench audit` and read back by `workbench audit --apply` and the app:

* `format` = "workbench-audit-findings", `version` = 1, `created` (UTC, ISO 8601), `source`, `root` (the data),
  `manifest` (the ingest's manifest.json, relative to the findings file), `classes`, `settings` (variant,
  weights, image size, thresholds), `features` (`file`, `cached`, `dim`), `timings` (seconds per stage),
  `summary` (counts: see `summary`), `stats` (`stats.dataset_stats`).
* `duplicates`: a list of groups, `{id, kind: exact|near, leakage, splits, max_hamming, min_cosine,
  min_correlation, max_rms, evidence, members}` (`evidence`: what proposed the links, of bytes, hash, features,
  thumbnail, and pixels when the pixel check confirmed near links; the last two fields, added in the same version,
  are absent from older files and None for exact groups);
  each member `{file, path, label, split, action, suggested_action}`.
* `label_errors`: `{status: ok|skipped, message, items}`; each item `{id, file, path, label, split, suggested,
  quality, suggested_probability, relabel_to, action, suggested_action}`, most suspicious first.
* `outliers`: `{threshold, k, items}`; each item `{id, file, path, label, split, score, nearest_class,
  class_distance, blank, noise_like, action, suggested_action}`, blank ones first, then noise-like ones (absent
  from older files), then farthest first.

`action` is what `--apply` does with an image: `keep` (the default everywhere: the audit changes nothing by
itself), `drop`, or `relabel` (to `relabel_to`, label errors only). `suggested_action` is the audit's advice;
`--apply --accept duplicates,label_errors,outliers` takes it for the named kinds. `file` is the path as the
user knows it (relative to the data), `path` the absolute one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT = "workbench-audit-findings"
VERSION = 1
FINDINGS_FILE = "findings.json"
SUMMARY_FILE = "summary.txt"
ACTIONS = ("keep", "drop", "relabel")
KINDS = ("duplicates", "label_errors", "outliers")


def default_out(data: str | None) -> Path:
    """`audits/<data name>`: the same folder for the same data, so a second audit reuses the cached features."""
    name = Path(str(data)).name.removesuffix(".zip") if data else "sample"
    return Path("audits") / (name.replace("tfds:", "tfds-") or "data")


def finding_items(findings: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The image entries of one kind whose `action` applies to a single image (duplicate members, items)."""
    if kind == "duplicates":
        return [m for g in findings["duplicates"] for m in g["members"]]
    return list(findings[kind]["items"])


def load_findings(path: str | Path) -> dict[str, Any]:
    """findings.json, checked for its format, version and actions; ValueError names the file and the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist; run `workbench audit DATA` first to write findings.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix the edit or run the audit again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a workbench audit findings file (format {FORMAT!r} expected)")
    if data.get("version") != VERSION:
        raise ValueError(
            f"{path} has findings version {data.get('version')!r}; this workbench reads {VERSION}: run the audit again"
        )
    classes = set(data["classes"])
    for kind in KINDS:
        for item in finding_items(data, kind):
            action = item.get("action", "keep")
            if action not in ACTIONS or (action == "relabel" and kind != "label_errors"):
                allowed = ACTIONS if kind == "label_errors" else ("keep", "drop")
                raise ValueError(
                    f"{path}: {kind} entry {item.get('file')!r} has action {action!r}; use one of {', '.join(allowed)}"
                )
            if action == "relabel" and item.get("relabel_to") not in classes:
                raise ValueError(
                    f"{path}: {item.get('file')!r} is relabelled to {item.get('relabel_to')!r}, which is not a class; "
                    f"use one of {', '.join(sorted(classes))}"
                )
    return data


def summary(findings: dict[str, Any]) -> dict[str, int]:
    groups = findings["duplicates"]
    return {
        "images": findings["stats"]["images"],
        "duplicate_groups": len(groups),
        "duplicate_images": sum(len(g["members"]) for g in groups),
        "exact_groups": sum(1 for g in groups if g["kind"] == "exact"),
        "leakage_groups": sum(1 for g in groups if g["leakage"]),
        "label_issues": len(findings["label_errors"]["items"]),
        "outliers": len(findings["outliers"]["items"]),
        "blank": findings["stats"]["blank"],
        "upscaled_a_lot": findings["stats"]["upscaled_a_lot"],
    }


def one_line(s: dict[str, int]) -> str:
    """The summary in one line (what `workbench inspect` prints when an audit exists)."""
    return (
        f"{s['duplicate_groups']} duplicate group(s) ({s['leakage_groups']} across splits), "
        f"{s['label_issues']} likely label error(s), {s['outliers']} outlier(s)"
    )


def format_text(findings: dict[str, Any], limit: int = 10) -> str:
    """A terminal summary: the counts, then the first `limit` findings of each kind."""
    s, st = findings["summary"], findings["stats"]
    lines = [
        f"audit of {findings['source']}: {s['images']} images, {len(findings['classes'])} classes "
        f"(features: {findings['settings']['variant']} at {findings['settings']['image_size']} px, "
        f"{'cached' if findings['features']['cached'] else 'computed'})",
        f"duplicates: {s['duplicate_groups']} group(s) of {s['duplicate_images']} images "
        f"({s['exact_groups']} exact); {s['leakage_groups']} span splits (leakage)",
    ]
    for g in findings["duplicates"][:limit]:
        tag = "LEAKAGE " if g["leakage"] else ""
        members = ", ".join(f"{m['file']} [{m['split']}]" for m in g["members"])
        lines.append(f"  {g['id']} {tag}{g['kind']} ({', '.join(g.get('evidence', []))}): {members}")
    le = findings["label_errors"]
    if le["status"] == "skipped":
        lines.append(f"label errors: not checked: {le['message']}")
    else:
        lines.append(f"likely label errors: {s['label_issues']}")
        for it in le["items"][:limit]:
            lines.append(
                f"  {it['id']} {it['file']}: labelled {it['label']!r}, looks like {it['suggested']!r} "
                f"(p={it['suggested_probability']:.2f}, label quality {it['quality']:.3f})"
            )
    lines.append(f"outliers: {s['outliers']} (score > {findings['outliers']['threshold']:.3f})")
    for it in findings["outliers"]["items"][:limit]:
        lines.append(
            f"  {it['id']} {it['file']} [{it['label']}]: score {it['score']:.3f}{' (blank)' if it['blank'] else ''}{' (noise-like)' if it.get('noise_like') else ''}"
        )
    lines.append(
        f"images: width {st['width']['min']:.0f}-{st['width']['max']:.0f} (median {st['width']['median']:.0f}), "
        f"height {st['height']['min']:.0f}-{st['height']['max']:.0f}, aspect {st['aspect_ratio']['min']:.2f}-"
        f"{st['aspect_ratio']['max']:.2f}; {st['upscaled_a_lot']} upscaled {st['upscale_warning']:.0f}x or more to "
        f"{st['image_size']} px; {st['grayscale_share']:.1%} grayscale; {st['blank']} blank"
    )
    counts = st["class_counts"]
    lines.append(
        "classes: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + f" (largest/smallest {st['imbalance_ratio']})"
    )
    return "\n".join(lines)
