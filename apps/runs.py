"""Past and present runs under `runs/`, read from their files, and which one the page is looking at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from apps import jobs, state
from workbench.engine import events as run_events
from workbench.engine.rundir import CONFIG_FILE, MODEL_FILE


@dataclass(frozen=True)
class RunInfo:
    """What the page shows about one run directory.

    status: `running`, `done`, `stopped` (ended by STOP, best checkpoint kept), `error` (the engine
    reported a failure), or `interrupted` (the process is gone without saying why: killed or crashed).
    """

    path: Path
    status: str
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def has_model(self) -> bool:
        return self.model_path.is_file()

    @property
    def best_val_accuracy(self) -> float | None:
        return self.summary.get("best_val_accuracy")


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's `config.yaml` as a plain dict ({} while the engine has not written it yet)."""
    import yaml

    try:
        values = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def run_info(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    summary = run_events.summarize(run_events.read_events(run_dir))
    status = summary["status"]
    if status == "done" and (summary["done"] or {}).get("stopped"):
        status = "stopped"
    elif status == "running" and not jobs.is_running(run_dir):
        status = "interrupted"
    return RunInfo(path=run_dir, status=status, config=read_config(run_dir), summary=summary)


def is_run_dir(path: Path) -> bool:
    """A run directory: not hidden, and holding what a started run writes first."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    return any((path / name).exists() for name in (CONFIG_FILE, run_events.EVENTS_FILE, jobs.PID_FILE, jobs.LOG_FILE))


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run under `root` (default `runs/`), newest first (run ids start with their start time)."""
    root = Path(root) if root is not None else state.runs_root()
    if not root.is_dir():
        return []
    dirs = sorted((p for p in root.iterdir() if is_run_dir(p)), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    return [run_info(p) for p in dirs]


def select(run_dir: Path | None) -> None:
    """Make `run_dir` the run that Train, Evaluate and Export show."""
    st.session_state["run_dir"] = str(run_dir) if run_dir else None


def selected_run() -> Path | None:
    """The run the page is looking at: the one chosen in this tab, else the live job, else the newest
    run with a model. Falling back to disk is what makes a refreshed tab pick up where it was."""
    chosen = st.session_state.get("run_dir")
    if chosen and Path(chosen).is_dir():
        return Path(chosen)
    live = jobs.live_job(state.runs_root())
    if live is not None:
        return live
    for info in list_runs():
        if info.has_model:
            return info.path
    return None


def pick_trained_run(key: str, empty_message: str) -> Path | None:
    """A selectbox of finished runs that have a model (the selected run first); None, with a hint, if none."""
    candidates = [info for info in list_runs() if info.has_model and info.status != "running"]
    if not candidates:
        st.info(empty_message, icon=":material/arrow_back:")
        return None
    names = [info.name for info in candidates]
    selected = selected_run()
    index = names.index(selected.name) if selected is not None and selected.name in names else 0
    name = st.selectbox("Run", names, index=index, key=key)
    run_dir = state.runs_root() / name
    select(run_dir)
    return run_dir


def runs_table(infos: list[RunInfo]) -> list[dict[str, Any]]:
    """Rows for a table of runs."""
    rows = []
    for info in infos:
        acc = info.best_val_accuracy
        rows.append(
            {
                "run": info.name,
                "status": info.status,
                "variant": info.config.get("variant", ""),
                "data": (
                    Path(info.config["data"]).name
                    if info.config.get("data")
                    else "embedded sample"
                    if info.config
                    else ""
                ),
                "best val accuracy": None if acc is None else round(float(acc), 4),
                "model": "yes" if info.has_model else "no",
            }
        )
    return rows
