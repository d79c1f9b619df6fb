"""Data: choose a dataset (zip upload, local folder, TFDS name or the embedded sample) and show its ingest report."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from apps import state
from apps.state import Dataset
from workbench.engine.config import RunConfig

SOURCES = ("Embedded sample", "Upload a zip", "Local folder or zip", "TFDS dataset")
THUMBNAIL_PX = 96
SAMPLES_PER_CLASS = 6

# What the app keeps under runs/.datasets (upload copies and the extractions of loaded datasets): the
# newest KEEP datasets within MAX_GB in all, older ones deleted after each load (issue 11, A6). A dataset
# that a live run trains on, or that this tab has just loaded, is never deleted. Environment variables
# override the defaults.
DATASETS_KEEP_ENV, DATASETS_KEEP = "WORKBENCH_DATASETS_KEEP", 5
DATASETS_MAX_GB_ENV, DATASETS_MAX_GB = "WORKBENCH_DATASETS_MAX_GB", 5.0


def render() -> None:
    st.header("1 · Data")
    st.caption(
        "Images sorted into one folder per class (`cats/…`, `dogs/…`). Optional `train/`, `val/`, `test/` "
        "folders above the class folders are kept as given; otherwise the images are split for you. "
        "Multi-label: a `labels.csv` (`image,labels`, labels separated by `;`) or `labels.jsonl` next to the images; "
        "give its path under *Local folder or zip*."
    )
    source = st.radio("Where are your images?", SOURCES, horizontal=True, key="data_source", on_change=_clear_error)
    if source == "Embedded sample":
        _sample_source()
    elif source == "Upload a zip":
        _upload_source()
    elif source == "Local folder or zip":
        _folder_source()
    else:
        _tfds_source()

    dataset = state.dataset()
    if dataset is not None and not Path(dataset.manifest_path).is_file():
        # Other tabs' loads pushed it out of the datasets the app keeps (DATASETS_KEEP).
        _fail(f"{dataset.label} is no longer stored by the app (it keeps only the newest datasets); load it again.")
        dataset = None
    error = state.get("data_error")
    if error:
        st.error(error, icon=":material/error:")
    if dataset is not None and not error:
        render_report(dataset)


# ---------------------------------------------------------------------------------------------- sources
def _sample_source() -> None:
    st.write("A small set of real photos shipped with workbench: the quickest way to try everything.")
    if st.button("Use the embedded sample", type="primary", key="data_use_sample"):
        load(None, "the embedded sample", is_sample=True)


def _upload_source() -> None:
    uploaded = st.file_uploader(
        "A .zip of class folders",
        type=["zip"],
        key="data_upload",
        help="Each top-level folder in the zip (or under train/ val/ test/) is one class.",
    )
    if uploaded is None:
        return
    content = uploaded.getvalue()
    digest = hashlib.sha256(content).hexdigest()[:16]
    path = state.datasets_root() / digest / _safe_filename(uploaded.name, default="upload.zip")
    current = state.dataset()
    if (current is not None and current.data == str(path)) or state.get("data_failed_upload") == str(path):
        return  # this exact file is already loaded (or refused): reruns do not repeat the work
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if load(str(path), uploaded.name) is None:
        state.put("data_failed_upload", str(path))


def _folder_source() -> None:
    with st.form("data_folder_form", border=False):
        path = st.text_input(
            "Path on this machine",
            key="data_folder",
            placeholder="/home/me/photos  or  /home/me/photos.zip  or  /home/me/photos/labels.csv",
            help="A folder with one sub-folder per class, a .zip of such a folder, or a multi-label labels.csv / "
            ".jsonl (image,labels rows; image paths relative to the file's folder).",
        )
        submitted = st.form_submit_button("Load folder", type="primary")
    if submitted:
        if not path.strip():
            _fail("Type the path of a folder of class folders (or a .zip), then press Load folder.")
            return
        resolved = Path(path.strip()).expanduser()
        load(str(resolved), str(resolved))


def _tfds_source() -> None:
    with st.form("data_tfds_form", border=False):
        name = st.text_input(
            "TensorFlow Datasets name",
            key="data_tfds",
            placeholder="tf_flowers",
            help="Any image classification dataset of tensorflow-datasets. It is downloaded on first use, "
            "so this machine needs internet access (or the dataset already in ~/tensorflow_datasets).",
        )
        submitted = st.form_submit_button("Load dataset", type="primary")
    if submitted:
        name = name.strip().removeprefix("tfds:")
        if not name:
            _fail("Type a TFDS dataset name such as tf_flowers, then press Load dataset.")
            return
        load(f"tfds:{name}", f"TFDS {name}")


def _clear_error() -> None:
    """A new choice of source starts without the previous source's error."""
    state.put("data_error", None)
    state.put("data_failed_upload", None)


def _safe_filename(name: str, default: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._")
    return cleaned or default


def _fail(message: str) -> None:
    state.put("data_error", message)
    state.put("dataset", None)


# ---------------------------------------------------------------------------------------------- ingest
def load(data: str | None, label: str, *, is_sample: bool = False) -> Dataset | None:
    """Ingest `data` (None: the embedded sample), remember it as the chosen dataset, or remember the
    error for the page to show.

    The split fractions and seed are the training defaults, so the split sizes shown here are the
    ones training will use. Every failure becomes a message on the page: `DataError` carries the fix
    in its text; anything else is reported with its type and message, never a traceback.
    """
    workdir = state.datasets_root() / "ingest" / _ingest_key(data)
    try:
        return _ingest(data, label, workdir, is_sample)
    finally:
        prune_datasets(state.datasets_root(), protect={str(data), *_live_run_data()})


def _ingest(data: str | None, label: str, workdir: Path, is_sample: bool) -> Dataset | None:
    from pipelines import DataError, ingest

    defaults = RunConfig()
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh look at the data each time Load is pressed
    try:
        with st.spinner(f"Checking every image of {label}…"):
            fractions = {
                name: value
                for name in ("val_fraction", "test_fraction")
                if (value := getattr(defaults.recipe, name)) is not None
            }
            manifest = ingest(data, workdir=workdir, seed=defaults.seed, **fractions)
    except DataError as exc:
        # The message names the file; an upload is named as the user knows it, not by its saved copy.
        message = str(exc).replace(str(data), label) if data else str(exc)
        _fail(message if message.startswith(label) else f"{label}: {message}")
        return None
    except Exception as exc:
        _fail(
            f"{label}: could not be read ({type(exc).__name__}: {exc}). Check that it is a folder of "
            "class folders, a .zip of one, or a TFDS image dataset name."
        )
        return None
    dataset = Dataset(
        data=data,
        label=label,
        report=manifest.report(),
        manifest_path=str(workdir / "manifest.json"),
        is_sample=is_sample,
    )
    state.put("data_error", None)
    state.put("dataset", dataset)
    return dataset


# ---------------------------------------------------------------------------------------------- retention
def _ingest_key(data: str | None) -> str:
    """The folder name under `.datasets/ingest/` of the ingest of `data`."""
    return hashlib.sha256(str(data).encode()).hexdigest()[:16]


@dataclass
class _Stored:
    """One dataset kept under `.datasets`: an upload's folder with its ingest, or the ingest of another source."""

    paths: list[Path]
    sources: set[str]  # the `data` strings it serves (an upload's saved files)
    size: int
    mtime: float


def _tree_stats(path: Path) -> tuple[int, float]:
    """Bytes under `path` (symlinks not followed) and the newest modification time in it."""
    size, newest = 0, path.lstat().st_mtime
    for root, _dirs, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            size, newest = size + info.st_size, max(newest, info.st_mtime)
    return size, newest


def _stored_datasets(root: Path) -> list[_Stored]:
    ingest_root = root / "ingest"
    stored, tied = [], set()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder == ingest_root or folder.name.startswith(".") or not folder.is_dir():
            continue
        sources = {str(f) for f in folder.iterdir() if f.is_file()}
        ingests = [ingest_root / _ingest_key(source) for source in sources]
        tied.update(ingests)
        stored.append(_Stored([folder, *[p for p in ingests if p.is_dir()]], sources, 0, 0.0))
    if ingest_root.is_dir():
        stored += [_Stored([p], set(), 0, 0.0) for p in sorted(ingest_root.iterdir()) if p not in tied]
    for entry in stored:
        stats = [_tree_stats(p) for p in entry.paths]
        entry.size, entry.mtime = sum(s for s, _ in stats), max(m for _, m in stats)
    return stored


def dataset_limits() -> tuple[int, int]:
    """(datasets kept, bytes kept) under `.datasets`, from the environment or the defaults."""
    keep = int(os.environ.get(DATASETS_KEEP_ENV, DATASETS_KEEP))
    max_gb = float(os.environ.get(DATASETS_MAX_GB_ENV, DATASETS_MAX_GB))
    return max(keep, 1), int(max_gb * 2**30)


def prune_datasets(root: Path, protect: set[str], limits: tuple[int, int] | None = None) -> list[Path]:
    """Delete the oldest datasets under `root` (`runs/.datasets`) beyond the newest `keep` within `max_bytes`.

    `protect` holds `data` strings (an upload's saved path, a folder) whose upload and ingest stay
    whatever their age: the dataset being loaded and those of live runs. Returns the deleted paths.
    """
    keep, max_bytes = limits or dataset_limits()
    protected_ingests = {root / "ingest" / _ingest_key(data) for data in protect}
    protected_sources = {os.path.abspath(data) for data in protect}  # a run's config may spell it otherwise

    def is_protected(entry: _Stored) -> bool:
        sources = {os.path.abspath(source) for source in entry.sources}
        return bool(sources & protected_sources or protected_ingests.intersection(entry.paths))

    entries = sorted(_stored_datasets(root), key=lambda e: e.mtime, reverse=True)
    protected = [e for e in entries if is_protected(e)]
    # The protected ones take their places first; the newest others fill what is left.
    kept, kept_bytes, removed = len(protected), sum(e.size for e in protected), []
    for entry in entries:
        if entry in protected:
            continue
        if kept < keep and kept_bytes + entry.size <= max_bytes:
            kept, kept_bytes = kept + 1, kept_bytes + entry.size
        else:
            for path in entry.paths:
                shutil.rmtree(path, ignore_errors=True)
            removed += entry.paths
    return removed


def _live_run_data() -> set[str]:
    """The `data` of every run under `runs/` that is training now (an upload it may still be reading)."""
    from apps import jobs, runs

    root = state.runs_root()
    live = [p for p in root.glob("*/") if jobs.is_running(p)] if root.is_dir() else []
    return {str(data) for p in live if (data := runs.read_config(p).get("data"))}


@st.cache_data(show_spinner=False, max_entries=8)
def _load_manifest(path: str, mtime: float):
    from pipelines.manifest import Manifest

    return Manifest.load(path)


def manifest_of(dataset: Dataset):
    path = Path(dataset.manifest_path)
    return _load_manifest(str(path), path.stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, size: int = THUMBNAIL_PX):
    """A small RGB copy of the image at `path` (EXIF orientation applied), as a numpy array."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        return np.asarray(image)


# ---------------------------------------------------------------------------------------------- report
def render_report(dataset: Dataset) -> None:
    report = dataset.report
    sizes = report["split_sizes"]
    kind = (
        f"labels (multi-label, {report['empty_label_sets']} images with none)"
        if report.get("multi_label")
        else "classes"
    )
    st.success(f"Loaded {dataset.label}: {report['num_images']} usable images in {report['num_classes']} {kind}.")
    cols = st.columns(5)
    cols[0].metric("Classes", report["num_classes"])
    cols[1].metric("Train", sizes["train"])
    cols[2].metric("Validation", sizes["val"])
    cols[3].metric("Test", sizes["test"])
    cols[4].metric("Quarantined", len(report["quarantined"]))
    st.caption(
        "Splits as given by the data."
        if report.get("user_splits")
        else "Splits made for you by iterative stratification (so every label is in every split)."
        if report.get("multi_label")
        else "Splits made for you, stratified per class (so every class is in every split)."
    )
    for warning in report["warnings"]:
        st.warning(warning, icon=":material/warning:")

    st.subheader("Images per class")
    st.altair_chart(class_count_chart(report), width="stretch")

    st.subheader("Samples")
    _sample_grid(dataset)

    quarantined = report["quarantined"]
    with st.expander(f"Quarantined files ({len(quarantined)})", expanded=bool(quarantined) and len(quarantined) <= 20):
        if quarantined:
            st.caption("These files are skipped for training; the reason says why.")
            st.dataframe(quarantined, width="stretch", hide_index=True)
        else:
            st.write("None: every file is a readable image.")

    from apps.audit_panel import render as render_audit

    render_audit(dataset)

    if st.button("Next: choose a model →", key="data_next"):
        state.go_to("Model")
        st.rerun()


def class_count_chart(report: dict):
    """A stacked bar chart of usable images per class and split."""
    import altair as alt
    import pandas as pd

    rows = [
        {"class": name, "split": split, "images": counts[split]}
        for name, counts in report["counts"].items()
        for split in ("train", "val", "test")
    ]
    frame = pd.DataFrame(rows)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=list(report["counts"]), title=None),
            y=alt.Y("sum(images):Q", title="images"),
            color=alt.Color("split:N", sort=["train", "val", "test"]),
            order=alt.Order("split_order:Q"),
            tooltip=["class", "split", "images"],
        )
        .transform_calculate(split_order="indexof(['train','val','test'], datum.split)")
        .properties(height=260)
    )


def _sample_grid(dataset: Dataset) -> None:
    manifest = manifest_of(dataset)
    by_class: dict[str, list] = {name: [] for name in manifest.classes}
    from pipelines.manifest import record_labels

    for record in manifest.usable():
        for label in record_labels(record):  # a multi-label image shows under each of its labels
            bucket = by_class[label]
            if len(bucket) < SAMPLES_PER_CLASS:
                bucket.append(record)
    for name, records in by_class.items():
        st.markdown(f"**{name}**")
        if not records:
            st.caption("no usable images")
            continue
        cols = st.columns(SAMPLES_PER_CLASS)
        for col, record in zip(cols, records, strict=False):
            try:
                col.image(thumbnail(record.source_path), caption=Path(record.path).name, width="stretch")
            except OSError:
                col.caption(f"{Path(record.path).name}: cannot be shown")
