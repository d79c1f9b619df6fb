"""The workbench app: Data → Model → Train → Evaluate → Export, and Compare for runs side by side, in the browser.

Start it with `workbench app` (or `streamlit run apps/workbench_app.py` from the project root). It serves
this machine only and refuses other addresses unless WORKBENCH_ALLOW_REMOTE=1 (see `apps.serving`).
Training runs as a separate `workbench train` process; this page only starts it, tails its events and
reads what it wrote, so a refresh, a second tab or a closed laptop lid never stops or duplicates a job.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run apps/workbench_app.py` puts apps/ on sys.path, not the project root: add the root so
# `apps`, `workbench` and `pipelines` import the same way from a source checkout as when installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from apps import state  # noqa: E402


def sidebar() -> tuple[str, st.delta_generator.DeltaGenerator]:
    """Draw the navigation; return the chosen section and a sidebar slot for the summary of choices."""
    goto = st.session_state.pop("_goto", None)
    if goto in state.SECTIONS:
        st.session_state["section"] = goto
    with st.sidebar:
        st.title("workbench")
        st.caption("EfficientNet transfer learning")
        section = st.radio(
            "Section",
            state.SECTIONS,
            key="section",
            format_func=lambda name: f"{state.SECTIONS.index(name) + 1}. {name}",
        )
        st.divider()
        slot = st.container()
    return section, slot


def _summary() -> None:
    from apps import jobs, runs
    from workbench.engine.config import RunConfig

    dataset = state.dataset()
    st.markdown(f"**Data:** {dataset.label if dataset else '—'}")
    st.markdown(f"**Model:** {state.get('variant') or RunConfig().variant + ' (default)'}")
    live = jobs.live_job(state.runs_root())
    if live is not None:
        st.markdown(f"**Training:** `{live.name}` running")
    else:
        selected = runs.selected_run()
        st.markdown(f"**Run:** `{selected.name}`" if selected else "**Run:** —")


def refuse_if_exposed() -> None:
    """Stop with the reason on the page when the app is reachable beyond this machine without the user's
    opt-in: it has no login (`apps.serving`, issue 11 A7)."""
    from apps import serving

    address = st.get_option("server.address")
    allow_remote = serving.remote_allowed()
    problem = serving.serving_problem(address, st.context.headers.get("Host"), allow_remote=allow_remote)
    if problem:
        st.error(problem, icon=":material/lock:")
        st.stop()
    if allow_remote and not serving.is_loopback(address):
        st.sidebar.warning(
            f"Served beyond this machine ({serving.ALLOW_REMOTE_ENV}=1): the app has no login of its own.",
            icon=":material/public:",
        )


def main() -> None:
    st.set_page_config(page_title="workbench", page_icon=":material/model_training:", layout="wide")
    refuse_if_exposed()
    section, summary = sidebar()
    # Imported when drawn: each section pulls in only what it needs (TensorFlow only where a model is used).
    if section == "Data":
        from apps import data_section as page
    elif section == "Model":
        from apps import model_section as page
    elif section == "Train":
        from apps import train_section as page
    elif section == "Evaluate":
        from apps import evaluate_section as page
    elif section == "Export":
        from apps import export_section as page
    elif section == "Search":
        from apps import search_section as page
    else:
        from apps import compare_section as page
    page.render()
    # Drawn last, so it shows the choices the section just made (not those of the previous rerun).
    with summary:
        _summary()


if __name__ == "__main__":
    main()
