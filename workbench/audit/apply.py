"""`apply_findings`: the actions chosen in a findings.json become a new dataset version.

A version is a folder of symbolic links to the original files (a copy where the file system has no links),
laid out as the workbench reads data: `<class>/<file>`, or `<split>/<class>/<file>` when the audited data had
its own split folders, so a relabelled image is a link in another class folder and a dropped one has no link.
The user's files are never moved, renamed, modified or deleted: only new files are written, into a new folder.

Beside the links:
* `dataset.json` (format "workbench-dataset-version", version 1): the version `id` (a digest of what the
  version holds), the parent data and findings, counts, and every action taken. `ingest` reads it into the
  manifest (`Manifest.dataset_version`), so a run trained on the version records which version it used.
* `groups.csv` (`file,group`): near-duplicate groups of which several members were kept; `ingest` keeps each
  group on one side of the split (see `pipelines.groups`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipelines.files import atomic_write_text, default_mode
from pipelines.manifest import Manifest
from workbench.audit.findings import KINDS, finding_items, load_findings

VERSION_FORMAT = "workbench-dataset-version"
VERSION_FILE = "dataset.json"
GROUPS_FILE = "groups.csv"


@dataclasses.dataclass(frozen=True)
class DatasetVersion:
    path: Path
    info: dict[str, Any]  # the content of dataset.json


def parse_kinds(text: str) -> tuple[str, ...]:
    """`--accept` as a tuple of kinds; "all" is every kind. ValueError names an unknown one."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if "all" in kinds:
        return KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--accept {text!r}: unknown kind(s) {', '.join(unknown)}; use {', '.join(KINDS)} or all")
    return kinds


def chosen_actions(findings: dict[str, Any], accept: tuple[str, ...] = ()) -> dict[str, tuple[str, str | None]]:
    """path → (action, new label) for every image whose action is not keep. A kind in `accept` takes the
    suggested actions. When findings disagree about an image, drop wins over relabel."""
    out: dict[str, tuple[str, str | None]] = {}
    for kind in KINDS:
        for item in finding_items(findings, kind):
            action = item["suggested_action"] if kind in accept else item.get("action", "keep")
            if action == "keep" or out.get(item["path"], ("",))[0] == "drop":
                continue
            out[item["path"]] = (action, item.get("relabel_to") if action == "relabel" else None)
    return out


def apply_findings(
    findings_path: str | os.PathLike, out: str | os.PathLike | None = None, *, accept: tuple[str, ...] = ()
) -> DatasetVersion:
    """Write the dataset version that `findings_path`'s actions (or the suggestions of the `accept` kinds)
    describe into `out` (default: beside the findings, `version-<id>`). Refuses an existing `out`."""
    findings_path = Path(findings_path)
    findings = load_findings(findings_path)
    manifest = Manifest.load(findings_path.parent / findings["manifest"])
    actions = chosen_actions(findings, accept)
    known = {r.path for r in manifest.usable()}
    if missing := [p for p in actions if p not in known]:
        raise ValueError(
            f"{findings_path} names {len(missing)} image(s) that its manifest does not hold (e.g. {missing[0]}); "
            "the findings were edited for other data: run the audit again"
        )
    by_split = manifest.user_splits
    entries, used = [], set()
    for r in manifest.usable():
        action, new_label = actions.get(r.path, ("keep", None))
        if action == "drop":
            continue
        label = new_label or r.label
        folder = (r.split, label) if by_split else (label,)
        name = _free_name(folder, os.path.basename(r.path), used)
        entries.append({"link": "/".join([*folder, name]), "target": os.path.abspath(r.path), "label": label})
    digest = hashlib.sha256("\n".join(f"{e['link']}\t{e['target']}" for e in entries).encode()).hexdigest()[:12]
    link_of = {e["target"]: e["link"] for e in entries}
    groups = _kept_groups(findings, link_of)
    info = {
        "format": VERSION_FORMAT,
        "version": 1,
        "id": digest,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "parent": {"source": manifest.source, "root": manifest.root, "findings": str(findings_path.resolve())},
        "layout": "splits" if by_split else "classes",
        "images": len(entries),
        "dropped": sum(1 for a, _ in actions.values() if a == "drop"),
        "relabelled": sum(1 for a, _ in actions.values() if a == "relabel"),
        "accepted_suggestions": list(accept),
        "groups": GROUPS_FILE if groups else None,
        "actions": [
            {"path": path, "action": a, **({"relabel_to": label} if label else {})}
            for path, (a, label) in sorted(actions.items())
        ],
    }
    target = Path(out) if out is not None else findings_path.parent / f"version-{digest}"
    _write_version(target, entries, info, groups)
    return DatasetVersion(target, info)


def _free_name(folder: tuple[str, ...], name: str, used: set) -> str:
    """`name`, or `stem-2.ext`, `stem-3.ext`... when another kept file of the same folder has that name."""
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while (*folder, candidate.casefold()) in used:
        n += 1
        candidate = f"{stem}-{n}{ext}"
    used.add((*folder, candidate.casefold()))
    return candidate


def _kept_groups(findings: dict[str, Any], link_of: dict[str, str]) -> list[tuple[str, str]]:
    """(link, group id) for the duplicate groups that still have two or more members in the version."""
    rows = []
    for g in findings["duplicates"]:
        kept = [link_of[m["path"]] for m in g["members"] if m["path"] in link_of]
        if len(kept) > 1:
            rows.extend((link, g["id"]) for link in kept)
    return rows


def _write_version(target: Path, entries: list[dict], info: dict, groups: list[tuple[str, str]]) -> None:
    """Links (else copies) in a staging folder, renamed to `target` when complete."""
    if target.exists():
        raise ValueError(f"{target} already exists; a dataset version is never overwritten: give another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for e in entries:
            link = staging / e["link"]
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(e["target"], link)
            except OSError:  # no symbolic links here (Windows without the privilege): a copy
                shutil.copyfile(e["target"], link)
        atomic_write_text(staging / VERSION_FILE, json.dumps(info, indent=1, ensure_ascii=False))
        if groups:
            lines = ["file,group", *(f"{_csv(link)},{gid}" for link, gid in groups)]
            atomic_write_text(staging / GROUPS_FILE, "\n".join(lines) + "\n")
        os.chmod(
            staging, default_mode(directory=True)
        )  # mkdtemp made it 0700; never chmod the links (that follows them)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
