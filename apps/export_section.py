"""Export: SavedModel, TFLite or .keras into `saved_models/`, the model card, and a zip to download."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import streamlit as st

from apps import runs, state


def format_labels() -> dict[str, str]:
    """Label shown → export format name, in registry order (`workbench.serving.registry`)."""
    from workbench.serving.registry import EXPORT_FORMATS

    return {fmt.label: fmt.name for fmt in EXPORT_FORMATS}


def export_folder(path: Path) -> Path:
    """The folder that holds an export and its labels and model card (a SavedModel version directory,
    or the folder of a `.keras` / `.tflite` file)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def zip_folder(folder: Path) -> bytes:
    """The folder as a zip archive in memory, its files under one top folder named like the export."""
    buffer = io.BytesIO()
    top = f"{folder.parent.name}-{folder.name}"
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, f"{top}/{file.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def run_export(run_dir: Path, fmt: str) -> Path | None:
    from workbench.serving.export import export

    out = state.saved_models_root() / run_dir.name
    try:
        with st.spinner(f"Exporting `{run_dir.name}` as {fmt}…"):
            return export(run_dir, fmt, out=out)
    except (ValueError, OSError) as exc:
        st.error(f"Export failed: {exc}", icon=":material/error:")
    except Exception as exc:
        st.error(f"Export failed ({type(exc).__name__}): {exc}", icon=":material/error:")
    return None


def render() -> None:
    st.header("5 · Export")
    run_dir = runs.pick_trained_run("export_run", "No trained model yet: train one in **3 · Train** first.")
    if run_dir is None:
        return
    name = run_dir.name

    formats = format_labels()
    label = st.radio(
        "Format",
        list(formats),
        horizontal=True,
        key="export_format",
        help="SavedModel: TF Serving and TensorFlow; TFLite: phones and edge devices; "
        ".keras: load back into Keras to train further.",
    )
    fmt = formats[label]
    if not (run_dir / "eval" / "report.json").is_file():
        st.caption("Tip: open 4 · Evaluate first, so the model card records the test accuracy.")
    if st.button("Export", type="primary", key="export_go"):
        path = run_export(run_dir, fmt)
        if path is not None:
            state.put("export_last", {"run": name, "format": fmt, "path": str(path)})

    last = state.get("export_last")
    if last and last["run"] == name and Path(last["path"]).exists():
        _show_export(Path(last["path"]), last["format"])


def _show_export(path: Path, fmt: str) -> None:
    folder = export_folder(path)
    st.success(f"Exported to `{folder}`", icon=":material/inventory_2:")
    data = zip_folder(folder)
    st.download_button(
        f"Download the {fmt} export (.zip, {len(data) / 1e6:.1f} MB)",
        data=data,
        file_name=f"{folder.parent.name}-{folder.name}.zip",
        mime="application/zip",
        key="export_download",
        on_click="ignore",
        type="primary",
    )
    card = folder / "model_card.md"
    if card.is_file():
        with st.container(border=True):
            st.markdown(card.read_text(encoding="utf-8"))
