"""Search: start `workbench search` on the chosen data as a background job, follow its trials live, and train
with the best recipe.

Like training, the search runs as its own process (`python -m workbench search DATA --search-dir runs/search-<id>`,
started by `apps.jobs.launch`), and this page knows it only through files in the search directory:
`events.jsonl` (one `trial` event per step), `results.json` and `pareto.png` (written when it ends) and the
recipe file. "Train with the best" starts `workbench train DATA --recipe <file>` as the Train section would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import streamlit as st

from apps import jobs, runs, state
from workbench.engine import events as run_events

REFRESH_S = 2.0


def search_dirs(root: Path) -> list[Path]:
    """Search directories of `workbench search` under `root` (their search.json names a space), newest first."""
    found = []
    for path in sorted(Path(root).glob("search-*/search.json"), reverse=True):
        try:
            if "space" in json.loads(path.read_text()):
                found.append(path.parent)
        except (OSError, ValueError):
            continue
    return found


def trial_rows(events: list[dict]) -> list[dict]:
    """One row per trial from the `trial` events: its options, status and score so far (pure, for the table)."""
    rows: dict[int, dict] = {}
    for e in events:
        if e.get("type") != "trial" or "number" not in e:
            continue
        row = rows.setdefault(e["number"], {"trial": e["number"]})
        row["status"] = {"start": "running"}.get(e["status"], e["status"])
        for key in ("val_accuracy", "latency_ms", "trial_seconds"):
            if e.get(key) is not None:
                row[key] = round(e[key], 4)
        for key, value in (e.get("params") or {}).items():
            row[key.removeprefix("recipe.")] = value
    return [rows[n] for n in sorted(rows)]


def search_command(data: str | None, search_dir: Path, options: dict[str, str]) -> list[str]:
    """The argv of a search into `search_dir`: what a user would type after `workbench search`."""
    import sys

    argv = [sys.executable, "-m", "workbench", "search"]
    if data:
        argv.append(str(data))
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return [*argv, "--search-dir", str(search_dir)]


def _start_panel() -> None:
    from workbench.hparam_search.config import OBJECTIVES, SPACES, STRATEGIES, HParamSearchConfig

    dataset = state.dataset()
    if dataset is None:
        st.info("Choose a dataset in **1 · Data** first.", icon=":material/arrow_back:")
    defaults = HParamSearchConfig()
    with st.form("search_form"):
        cols = st.columns(3)
        space = cols[0].selectbox("Space", SPACES, help="recipe: learning rates, regularisation, resolution, preset")
        strategy = cols[1].selectbox("Strategy", STRATEGIES)
        objective = cols[2].selectbox("Objective", OBJECTIVES)
        cols = st.columns(3)
        trials = cols[0].number_input("Trials", 1, 500, defaults.trials)
        budget = cols[1].text_input("Time budget", defaults.time_budget or "")
        variant = cols[2].text_input("Model", state.get("variant") or defaults.variant)
        submitted = st.form_submit_button("Start search", disabled=dataset is None, type="primary")
    if submitted and dataset is not None:
        search_dir = state.runs_root() / f"search-{time.strftime('%Y%m%d-%H%M%S')}"
        options = {"space": space, "strategy": strategy, "objective": objective, "trials": int(trials)}
        options.update({"variant": variant, **({"time_budget": budget} if budget.strip() else {})})
        try:
            jobs.launch(search_command(dataset.data, search_dir, options), search_dir, state.runs_root())
        except jobs.JobAlreadyRunning as exc:
            st.error(str(exc))
            return
        state.put("search_dir", str(search_dir))
        st.rerun()


def render_search(search_dir: Path) -> None:
    """The trials table, the Pareto plot and the winner of one search."""
    events = run_events.read_events(search_dir)
    rows = trial_rows(events)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.caption("No trial yet: the data is being ingested.")
    errors = [e for e in events if e["type"] == "error"]
    if errors:
        st.error(errors[-1].get("message", "the search failed"))
        st.code(jobs.log_tail(search_dir))
    if (search_dir / "pareto.png").exists():
        st.image(str(search_dir / "pareto.png"))
    done = [e for e in events if e["type"] == "done"]
    if not done:
        return
    result = done[-1]
    if result.get("warning"):
        st.warning(f"Tie: {result['warning']}")
    recipe = result.get("recipe_path")
    if recipe is None:
        st.caption("No recipe saved: the winner is not separable from the others (`--save-anyway` keeps it).")
        return
    st.success(f"Best: trial {result['chosen']['number']}, val accuracy {result['best_val_accuracy']:.4f}: `{recipe}`")
    dataset = state.dataset()
    if st.button("Train with the best", type="primary", disabled=dataset is None, key="search_train_best"):
        run_dir = state.runs_root() / jobs.new_run_id(state.get("variant") or "lite0")
        argv = jobs.train_command(dataset.data, run_dir, ["--recipe", recipe, "--no-evaluate", "--no-export"])
        try:
            jobs.launch(argv, run_dir, state.runs_root())
        except jobs.JobAlreadyRunning as exc:
            st.error(str(exc))
            return
        runs.select(run_dir)
        state.go_to("Train")
        st.rerun()


def render() -> None:
    st.header("Search")
    st.caption(
        "Searches the fine-tuning recipe (or an augmentation policy) with short trials on a subset of your data; "
        "the best is saved as a recipe file. Differences within the noise are reported as ties."
    )
    current = state.get("search_dir")
    if current and jobs.is_running(Path(current)):

        @st.fragment(run_every=REFRESH_S)
        def _tick() -> None:
            if not jobs.is_running(Path(current)):
                st.rerun(scope="app")
            render_search(Path(current))

        st.info(f"Search `{Path(current).name}` is running.", icon=":material/hourglass_top:")
        _tick()
        return
    _start_panel()
    found = search_dirs(state.runs_root())
    if not found:
        return
    names = [p.name for p in found]
    index = names.index(Path(current).name) if current and Path(current).name in names else 0
    choice = st.selectbox("Open a search", names, index=index, key="search_open")
    render_search(state.runs_root() / choice)
