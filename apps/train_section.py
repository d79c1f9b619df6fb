"""Train: the engine's own config as a form, a separate training process, live progress, Stop, past runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import streamlit as st

from apps import jobs, runs, state
from workbench.compare import phase2_start
from workbench.engine import events as run_events
from workbench.engine.config import RunConfig, iter_fields
from workbench.timefmt import format_duration

# Chosen in the Data and Model sections, or fixed by the app: not part of the Train form.
SET_ELSEWHERE = ("data", "variant", "weights", "image_size", "out", "run_dir")
# Shown first, in this order; every other option of RunConfig goes under "Advanced".
MAIN_OPTIONS = (
    "recipe_mode",
    "time_budget",
    "epochs",
    "fine_tune_epochs",
    "batch_size",
    "augment",
    "recipe.learning_rate",
    "recipe.fine_tune_learning_rate",
    "precision",
    "strategy",
)
REFRESH_S = 1.5


# ---------------------------------------------------------------------------------------------- form
def _label(path: str) -> str:
    return path.split(".")[-1].replace("_", " ").capitalize()


def option_widget(path: str, field: dataclasses.Field, default: Any, tp: Any) -> Any:
    """One form widget for a RunConfig option, built from the field's type and metadata."""
    help_text = field.metadata.get("help")
    choices = field.metadata.get("choices")
    key = f"train_opt_{path}"
    # The form is not drawn while a job runs, so Streamlit forgets its widgets: start from the values
    # of the last Start instead of the defaults.
    default = state.get("train_values", {}).get(path, default)
    if choices:
        # An option the automatic recipe chooses offers "auto" (None, left out of the command) first.
        options = [None, *choices] if field.default is None else list(choices)
        return st.selectbox(
            _label(path),
            options,
            index=options.index(default),
            format_func=lambda v: "auto" if v is None else str(v),
            help=help_text,
            key=key,
        )
    if "fixed" in field.metadata and tp in (int, float):  # empty: the automatic recipe chooses it
        kind = dict(step=1, min_value=0) if tp is int else dict(min_value=0.0, format="%g")
        value = None if default is None else tp(default)
        return st.number_input(_label(path), value=value, placeholder="auto", help=help_text, key=key, **kind)
    if field.default is None:  # optional: empty means "let the engine decide", as in the CLI
        value = "" if default is None else str(default)
        return st.text_input(_label(path), value=value, placeholder="default", help=help_text, key=key)
    if tp is bool:
        return st.checkbox(_label(path), value=default, help=help_text, key=key)
    if tp is int:
        return st.number_input(_label(path), value=int(default), min_value=0, step=1, help=help_text, key=key)
    if tp is float:
        return st.number_input(_label(path), value=float(default), min_value=0.0, format="%g", help=help_text, key=key)
    return st.text_input(_label(path), value="" if default is None else str(default), help=help_text, key=key)


def config_form(disabled: bool) -> dict[str, Any] | None:
    """The Train form; returns the chosen option values (dotted paths) when Start is pressed."""
    fields = [f for f in iter_fields() if f[0] not in SET_ELSEWHERE]
    by_path = {f[0]: f for f in fields}
    main = [by_path[p] for p in MAIN_OPTIONS if p in by_path]
    advanced = [f for f in fields if f[0] not in MAIN_OPTIONS]
    values: dict[str, Any] = {}
    with st.form("train_form"):
        cols = st.columns(4)
        for i, (path, field, default, tp) in enumerate(main):
            with cols[i % 4]:
                values[path] = option_widget(path, field, default, _base_type(tp))
        with st.expander("Advanced options"):
            cols = st.columns(4)
            for i, (path, field, default, tp) in enumerate(advanced):
                with cols[i % 4]:
                    values[path] = option_widget(path, field, default, _base_type(tp))
        submitted = st.form_submit_button("Start training", type="primary", disabled=disabled)
    return values if submitted else None


def _base_type(tp: Any) -> Any:
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def build_config(values: dict[str, Any], run_dir: Path) -> RunConfig:
    """The RunConfig for the current page choices plus the form values; raises ValueError if invalid."""
    from workbench.engine.config import with_overrides

    dataset = state.dataset()
    overrides = dict(values)
    overrides.update(
        {
            "data": dataset.data if dataset else None,
            "variant": state.get("variant") or RunConfig().variant,
            "weights": state.get("weights", RunConfig().weights),
            "image_size": state.get("image_size"),
            "run_dir": str(run_dir),
        }
    )
    return with_overrides(RunConfig(), overrides).validate()


# ---------------------------------------------------------------------------------------------- start
def config_flags(config: RunConfig) -> list[str]:
    """`config` as `workbench train` flags, spelt by `config_fields.flag` as that command's parser spells
    them (one source). DATA and --run-dir are left to `jobs.train_command`. An empty option whose
    default is empty is left out; one whose default is not (weights) is passed as `none`."""
    from workbench.config_fields import flag

    argv: list[str] = []
    for path, field, value, _tp in iter_fields(config):
        if path in ("data", "run_dir") or (value is None and field.default is None):
            continue
        argv += [flag(path, field), "none" if value is None else str(value)]
    return argv


def start(values: dict[str, Any]) -> None:
    """Validate the config and start `workbench train` for it in a new run directory.

    The app evaluates and exports from its own sections, so the job only trains."""
    variant = state.get("variant") or RunConfig().variant
    run_dir = state.runs_root() / jobs.new_run_id(variant)
    try:
        config = build_config(values, run_dir)
    except ValueError as exc:
        st.error(f"Cannot start: {exc}", icon=":material/error:")
        return
    argv = jobs.train_command(config.data, run_dir, [*config_flags(config), "--no-evaluate", "--no-export"])
    state.put("train_values", values)
    try:
        jobs.launch(argv, run_dir, state.runs_root())
    except jobs.JobAlreadyRunning as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
        runs.select(exc.run_dir)
        return
    runs.select(run_dir)
    st.rerun()


# ---------------------------------------------------------------------------------------------- progress
def progress_fraction(config: dict[str, Any], events: list[dict]) -> float:
    """How much of the run is done, in [0, 1]: finished epochs plus the share of the current one."""
    total = int(config.get("epochs") or 0) + int(config.get("fine_tune_epochs") or 0)
    phases = [e for e in events if e["type"] == "phase"]
    if phases:  # a resumed or shortened phase says how many epochs it really has
        planned = {e["phase"]: int(e["epochs"]) for e in phases}
        total = max(total, sum(planned.values()))
    if total <= 0:
        return 0.0
    finished = {(e["phase"], e["epoch"]) for e in events if e["type"] == "epoch"}
    partial = 0.0
    last = next((e for e in reversed(events) if e["type"] in ("batch", "epoch")), None)
    if last is not None and last["type"] == "batch" and last.get("steps"):
        partial = float(last["step"]) / float(last["steps"])
    return max(0.0, min(1.0, (len(finished) + partial) / total))


def curve_frame(config: dict[str, Any], events: list[dict]):
    """Loss and accuracy per point on one epoch axis across both phases.

    Training values come from batch events (Keras' running mean within the epoch), validation values
    from epoch events; phase 2 continues the axis where phase 1 ended.
    """
    import pandas as pd

    offsets = {1: 0.0, 2: phase2_start(config, events)}
    rows = []
    for e in events:
        if e["type"] == "batch" and e.get("steps"):
            x = offsets.get(e["phase"], 0.0) + e["epoch"] - 1 + e["step"] / e["steps"]
            for metric in ("loss", "accuracy"):
                rows.append(
                    {"epoch": x, "phase": e["phase"], "metric": metric, "split": "train", "value": e.get(metric)}
                )
        elif e["type"] == "epoch":
            x = offsets.get(e["phase"], 0.0) + e["epoch"]
            for metric in ("loss", "accuracy"):
                rows.append(
                    {"epoch": x, "phase": e["phase"], "metric": metric, "split": "train", "value": e.get(metric)}
                )
                rows.append(
                    {
                        "epoch": x,
                        "phase": e["phase"],
                        "metric": metric,
                        "split": "validation",
                        "value": e.get(f"val_{metric}"),
                    }
                )
    frame = pd.DataFrame(rows, columns=["epoch", "phase", "metric", "split", "value"])
    return frame.dropna(subset=["value"]), offsets[2]


def curve_chart(frame, metric: str, phase2_start: float, show_phase2: bool):
    import altair as alt

    data = frame[frame["metric"] == metric]
    lines = (
        alt.Chart(data)
        .mark_line(point=alt.OverlayMarkDef(size=30, filled=True))
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="~g", tickMinStep=1)),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=metric == "accuracy")),
            color=alt.Color("split:N", sort=["train", "validation"], title=None),
            detail="phase:N",
            tooltip=["phase", alt.Tooltip("epoch:Q", format=".2f"), "split", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    chart = lines
    if show_phase2:
        rule = alt.Chart({"values": [{"x": phase2_start}]}).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
        label = (
            alt.Chart({"values": [{"x": phase2_start, "text": "phase 2: fine-tune"}]})
            .mark_text(align="left", dx=4, dy=-6, color="gray")
            .encode(x="x:Q", y=alt.value(8), text="text:N")
        )
        chart = lines + rule + label
    return chart.properties(height=240, title=metric)


def render_run(info: runs.RunInfo, events: list[dict]) -> None:
    """Progress, phase, curves and the outcome of one run."""
    summary = info.summary
    config = info.config
    phase = summary.get("phase")
    last = summary.get("batch") or summary.get("epoch")
    if info.status == "running":
        fraction = progress_fraction(config, events)
        eta = last.get("eta_s") if last else None
        phase_text = f"phase {phase['phase']}: {phase['name']}" if phase else "starting up (loading data and model)"
        if last is not None and last.get("stage") == "features":
            phase_text += " · computing the frozen backbone's features once"
        elif last is not None and last.get("stage") == "trunk":
            phase_text += " · computing the frozen blocks' output once"
        stop_asked = jobs.stop_requested(info.path)
        st.progress(
            fraction,
            text=f"{fraction:.0%} · ETA {format_duration(eta, 'words')} · {phase_text}"
            + (" · stopping after this batch" if stop_asked else ""),
        )
        if last:
            cols = st.columns(4)
            cols[0].metric("Phase", phase["phase"] if phase else "—")
            cols[1].metric("Epoch", last.get("epoch", "—"))
            cols[2].metric("Loss", f"{last['loss']:.4f}" if last.get("loss") is not None else "—")
            cols[3].metric("Images/s", f"{last['images_per_s']:.1f}" if last.get("images_per_s") else "—")
    elif info.status in ("done", "stopped"):
        acc = info.best_val_accuracy
        text = f"best validation accuracy {acc:.1%}" if acc is not None else "no validation accuracy recorded"
        verb = "Stopped on request; kept the best checkpoint" if info.status == "stopped" else "Finished"
        st.success(f"{verb}: {text}.", icon=":material/check_circle:")
    elif info.status == "error":
        st.error(f"Training failed: {summary['error']['message']}", icon=":material/error:")
    else:
        st.error(
            "The training process ended without finishing (killed or crashed). Its last output:",
            icon=":material/error:",
        )
        st.code(jobs.log_tail(info.path) or "(no output)", language=None)

    _plan(events)
    _stages(events)
    frame, phase2_start = curve_frame(config, events)
    if not frame.empty:
        show_phase2 = any(e["type"] == "phase" and e["phase"] == 2 for e in events)
        left, right = st.columns(2)
        left.altair_chart(curve_chart(frame, "loss", phase2_start, show_phase2), width="stretch")
        right.altair_chart(curve_chart(frame, "accuracy", phase2_start, show_phase2), width="stretch")


def _plan(events: list[dict]) -> None:
    """What the automatic recipe chose and why (its `plan` event), and any time-budget notes."""
    plans = [e for e in events if e["type"] == "plan"]
    notes = [e["message"] for e in events if e["type"] == "budget"]
    if plans:
        budget = format_duration(plans[-1].get("budget_s"), "words")
        with st.expander(f"Automatic recipe: {len(plans[-1]['decisions'])} choices for a {budget} budget"):
            st.markdown("\n".join(f"- `{line}`" for line in plans[-1]["decisions"]))
    for note in notes:
        st.info(f"Time budget: {note}", icon=":material/timer:")


def _stages(events: list[dict]) -> None:
    """Progressive learning's stages so far: the image size grows stage by stage (`stage` events)."""
    # keyed by phase and stage: a resumed run announces the stage it resumes in again
    stages = list({(e["phase"], e["stage"]): e for e in events if e["type"] == "stage"}.values())
    if stages:
        sizes = " → ".join(f"{e['image_size']} px (epochs {e['first_epoch']}–{e['last_epoch']})" for e in stages)
        st.caption(f"Progressive learning, phase {stages[-1]['phase']}, {stages[-1]['stages']} stages: {sizes}")


def live_view(run_dir: Path) -> None:
    """Redraw the running job every REFRESH_S seconds; rerun the whole page once it ends."""

    @st.fragment(run_every=REFRESH_S)
    def _tick() -> None:
        info = runs.run_info(run_dir)
        events = run_events.read_events(run_dir)
        if info.status != "running":
            st.rerun(scope="app")
        render_run(info, events)
        if st.button(
            "Stop training",
            key="train_stop",
            disabled=jobs.stop_requested(run_dir),
            help="Ends training after the current batch; the best checkpoint so far is kept as the model.",
        ):
            jobs.request_stop(run_dir)
            st.rerun(scope="fragment")

    _tick()


# ---------------------------------------------------------------------------------------------- page
def render() -> None:
    st.header("3 · Train")
    live = jobs.live_job(state.runs_root())
    if live is not None:
        runs.select(live)
        st.info(
            f"Training run `{live.name}` is in progress (started here or in another tab). "
            "This page follows it; nothing new starts until it ends.",
            icon=":material/hourglass_top:",
        )
        live_view(live)
    else:
        _start_panel()
        selected = runs.selected_run()
        if selected is not None:
            st.subheader(f"Run `{selected.name}`")
            render_run(runs.run_info(selected), run_events.read_events(selected))
    _past_runs()


def _start_panel() -> None:
    dataset = state.dataset()
    variant = state.get("variant") or RunConfig().variant
    if dataset is None:
        st.info("Choose a dataset in **1 · Data** first.", icon=":material/arrow_back:")
    else:
        size = state.get("image_size")
        st.write(
            f"**Data:** {dataset.label} · **Model:** `{variant}` · **Weights:** "
            f"{state.get('weights', RunConfig().weights) or 'none (from scratch)'}"
            + (f" · **Image size:** {size} px" if size else "")
        )
    values = config_form(disabled=dataset is None)
    if values is not None:
        start(values)


def _past_runs() -> None:
    infos = runs.list_runs()
    st.subheader("Past runs")
    if not infos:
        st.caption("No runs yet: they appear here, newest first, and stay in `runs/`.")
        return
    st.dataframe(runs.runs_table(infos), hide_index=True, width="stretch")
    names = [info.name for info in infos]
    selected = runs.selected_run()
    index = names.index(selected.name) if selected is not None and selected.name in names else 0
    choice = st.selectbox("Open a run", names, index=index, key="train_open_run")
    if st.button("Open run", key="train_open"):
        runs.select(state.runs_root() / choice)
        st.rerun()
