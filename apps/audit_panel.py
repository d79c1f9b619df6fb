"""The Data section's data-health panel: audit the loaded dataset, review what was found with thumbnails,
choose keep / drop / relabel per image, and write a new dataset version (`workbench audit --apply`).

The audit lives under `runs/.datasets/audit/<key of the data>/` (findings.json, its manifest, the cached
features), so a refresh or a second visit shows it without computing anything again. The user's files are
never touched: a version is a new folder of links.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import streamlit as st

from apps import state
from apps.state import Dataset

MAX_SHOWN = 24  # entries per kind on the page; findings.json and summary.txt hold them all
CHOICES = {"duplicates": ("keep", "drop"), "label_errors": ("keep", "drop", "relabel"), "outliers": ("keep", "drop")}
TITLES = {"duplicates": "Duplicates", "label_errors": "Likely label errors", "outliers": "Outliers"}


def audit_dir(dataset: Dataset) -> Path:
    return state.datasets_root() / "audit" / hashlib.sha256(str(dataset.data).encode()).hexdigest()[:16]


def render(dataset: Dataset) -> None:
    from workbench.audit.findings import FINDINGS_FILE, load_findings

    st.subheader("Data health")
    out = audit_dir(dataset)
    path = out / FINDINGS_FILE
    if not path.is_file():
        st.caption(
            "Find exact and near duplicates (and copies across train/test), likely label errors and outliers. "
            "Runs the backbone over every image once (minutes on a CPU); the features are kept for next time."
        )
        if st.button("Audit this dataset", key="audit_run"):
            _run(dataset, out)
            st.rerun()
        return
    findings = load_findings(path)
    s = findings["summary"]
    cols = st.columns(4)
    cols[0].metric("Duplicate groups", s["duplicate_groups"])
    cols[1].metric("Across splits", s["leakage_groups"])
    cols[2].metric("Label errors", s["label_issues"])
    cols[3].metric("Outliers", s["outliers"])
    if findings["label_errors"]["status"] == "skipped":
        st.info(findings["label_errors"]["message"], icon=":material/info:")
    st.button("Use the audit's suggestions", key="audit_suggest", on_click=_suggest, args=(findings,))
    for kind, tab in zip(CHOICES, st.tabs([TITLES[k] for k in CHOICES]), strict=True):
        with tab:
            _render_kind(findings, kind)
    left, right = st.columns(2)
    if left.button("Make a dataset version from these choices", key="audit_apply", type="primary"):
        _apply(findings, path)
    if right.button("Audit again", key="audit_again"):
        _run(dataset, out)
        st.rerun()


def _key(item: dict) -> str:
    return f"audit_{item['id']}" if "id" in item else f"audit_{hashlib.sha256(item['path'].encode()).hexdigest()[:12]}"


def _entries(findings: dict, kind: str) -> list[dict]:
    """Image entries of `kind`; a duplicate member gets an id of its group and position."""
    if kind != "duplicates":
        return findings[kind]["items"]
    return [m | {"id": f"{g['id']}-{k}"} for g in findings["duplicates"] for k, m in enumerate(g["members"])]


def _render_kind(findings: dict, kind: str) -> None:
    from apps.data_section import thumbnail

    if kind == "duplicates":
        groups = findings["duplicates"]
        if not groups:
            st.write("None found.")
        for g in groups[:MAX_SHOWN]:
            leak = " · **across splits (leakage)**" if g["leakage"] else ""
            found_by = ", ".join(g.get("evidence", []))
            match = f", pixels {g['min_correlation']:.2f} correlated" if g.get("min_correlation") is not None else ""
            st.markdown(f"`{g['id']}` {g['kind']} (found by {found_by}{match}){leak}")
            cols = st.columns(max(len(g["members"]), 3))
            for k, (col, m) in enumerate(zip(cols, g["members"], strict=False)):
                _image_choice(col, m | {"id": f"{g['id']}-{k}"}, kind, f"{m['file']} [{m['split']}]", thumbnail)
        return
    items = findings[kind]["items"]
    if not items:
        st.write("None found.")
    cols = st.columns(4)
    for n, item in enumerate(items[:MAX_SHOWN]):
        if kind == "label_errors":
            caption = f"{item['file']}: labelled {item['label']}, looks like {item['suggested']}"
        else:
            why = " (blank)" if item.get("blank") else " (noise-like)" if item.get("noise_like") else ""
            caption = f"{item['file']} [{item['label']}]: distance {item['score']:.2f}{why}"
        _image_choice(cols[n % 4], item, kind, caption, thumbnail)
    if len(items) > MAX_SHOWN:
        st.caption(f"…and {len(items) - MAX_SHOWN} more in findings.json")


def _image_choice(col, item: dict, kind: str, caption: str, thumbnail) -> None:
    try:
        col.image(thumbnail(item["path"]), caption=caption, width="stretch")
    except OSError:
        col.caption(f"{caption} (cannot be shown)")
    choices = CHOICES[kind]
    col.selectbox(
        "action", choices, index=choices.index(item.get("action", "keep")), key=_key(item), label_visibility="collapsed"
    )


def _suggest(findings: dict) -> None:
    """Set every choice on the page to the audit's suggestion (a callback: before the widgets are drawn)."""
    for kind in CHOICES:
        for item in _entries(findings, kind):
            st.session_state[_key(item)] = item["suggested_action"]


def _apply(findings: dict, path: Path) -> None:
    """Write the page's choices into findings.json, then the dataset version they describe."""
    from pipelines.files import atomic_write_text

    for kind in ("label_errors", "outliers"):
        for item in findings[kind]["items"]:
            item["action"] = st.session_state.get(_key(item), item["action"])
    for g in findings["duplicates"]:
        for k, m in enumerate(g["members"]):
            m["action"] = st.session_state.get(_key(m | {"id": f"{g['id']}-{k}"}), m["action"])
    atomic_write_text(path, json.dumps(findings, indent=1, ensure_ascii=False))
    make_version(
        path,
        path.parent / "versions" / stamp(),
        "under 'Local folder or zip' to train on it; the run records the version",
    )


def make_version(findings: Path, dest: Path, how_to_use: str) -> None:
    """`apply_findings` into `dest`, said on the page: the version's counts and folder, or why it was refused."""
    from workbench.audit.apply import apply_findings

    try:
        version = apply_findings(findings, dest)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    info = version.info
    st.success(
        f"Dataset version {info['id']}: {info['images']} images ({info['dropped']} dropped, {info['relabelled']} "
        f"relabelled), links to your files in {version.path}. Load that folder {how_to_use}."
    )


def stamp() -> str:
    """A folder name for something made now (a dataset version, a review): sorts by time."""
    import datetime

    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _run(dataset: Dataset, out: Path) -> None:
    from workbench.audit import run_audit

    with st.spinner(f"Auditing {dataset.label}: reading every image, then the backbone's features…"):
        try:
            run_audit(dataset.data, out)
        except ValueError as exc:
            st.error(str(exc), icon=":material/error:")
