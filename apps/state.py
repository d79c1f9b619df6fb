"""Where the app keeps things: folders on disk (which survive a refresh) and per-tab session state.

Everything that must survive a browser refresh (runs, exports, uploaded datasets) lives on disk under
the folder the app was started in, like `workbench train`; the session only remembers choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

SECTIONS = ("Data", "Model", "Train", "Evaluate", "Export", "Compare", "Search")


def runs_root() -> Path:
    """`runs/` of the current directory: the same place `workbench train` writes to."""
    return Path("runs").resolve()


def saved_models_root() -> Path:
    return Path("saved_models").resolve()


def datasets_root() -> Path:
    """Uploaded zips and their extracted, validated copies (hidden inside runs/, which git ignores)."""
    return runs_root() / ".datasets"


@dataclass
class Dataset:
    """The dataset chosen in the Data section.

    `data` is what `workbench train` is given (a folder, a zip, `tfds:NAME`; None for the embedded
    sample); `label` is how the page names it; `report` is `Manifest.report()`; `manifest_path` the manifest written by the ingest.
    """

    data: str | None
    label: str
    report: dict[str, Any]
    manifest_path: str
    is_sample: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def dataset() -> Dataset | None:
    return st.session_state.get("dataset")


def go_to(section: str) -> None:
    """Switch the page to `section` on the next rerun (a widget's value cannot change after it is drawn)."""
    st.session_state["_goto"] = section
