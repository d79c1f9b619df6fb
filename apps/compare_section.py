"""Compare: two or more runs side by side: a summary row each, overlaid validation curves, and the config
fields where they differ.

The summary rows are `workbench runs`' own (`workbench.commands.runs`), the curves and the diff come from
`workbench.compare`; this page only lays them out.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import runs, state
from workbench import compare
from workbench.commands.runs import list_runs
from workbench.timefmt import format_duration

# (events field, chart title): the validation curves, one line per run
CURVES = (("val_accuracy", "validation accuracy"), ("val_loss", "validation loss"))


def summary_frame(rows: list[dict]):
    """One line per run: what it was, how it ended and how well it did."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "run": row["id"],
                "variant": row["variant"],
                "status": row["status"],
                "best val accuracy": row["best_val_accuracy"],
                "test accuracy": row["test_accuracy"],
                "duration": format_duration(row["seconds"], "words") if row["seconds"] is not None else "—",
            }
            for row in rows
        ]
    )


def diff_frame(diff: list[compare.DiffRow], run_names: list[str]):
    """The differing fields as rows, one text column per run (config values mix types)."""
    import pandas as pd

    return pd.DataFrame(
        [[compare.format_value(row.values[name]) for name in run_names] for row in diff],
        index=pd.Index([row.field for row in diff], name="field"),
        columns=run_names,
    )


def curve_chart(frame, field: str, title: str):
    import altair as alt

    return (
        alt.Chart(frame.dropna(subset=[field]))
        .mark_line(point=alt.OverlayMarkDef(size=30, filled=True))
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="~g", tickMinStep=1)),
            y=alt.Y(f"{field}:Q", title=title, scale=alt.Scale(zero=field == "val_accuracy")),
            color=alt.Color("run:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical")),
            detail="phase:N",
            tooltip=["run", "phase", alt.Tooltip("epoch:Q", format="~g"), alt.Tooltip(f"{field}:Q", format=".4f")],
        )
        .properties(height=260, title=title)
    )


def render_curves(chosen: list[dict], configs: dict[str, dict]) -> None:
    import pandas as pd

    rows = [r for row in chosen for r in compare.curves(row["path"], configs[row["id"]])]
    if not rows:
        st.info("None of these runs has finished an epoch yet.", icon=":material/hourglass_empty:")
        return
    frame = pd.DataFrame(rows)
    st.caption("Phase 2 (fine-tuning) starts after the epochs phase 1 planned, as on the Train page.")
    for column, (field, title) in zip(st.columns(len(CURVES)), CURVES, strict=True):
        column.altair_chart(curve_chart(frame, field, title), width="stretch")


def render_diff(chosen: list[dict], configs: dict[str, dict]) -> None:
    names = [row["id"] for row in chosen]
    missing = [name for name in names if not configs[name]]
    if missing:
        st.warning(
            f"No readable config.yaml in {', '.join(missing)}: its fields show as *(not in config)*.",
            icon=":material/warning:",
        )
    diff = compare.config_diff(configs)
    if not diff:
        st.info("These runs were trained with the same settings.", icon=":material/drag_handle:")
        return
    st.dataframe(diff_frame(diff, names), width="stretch")


def render() -> None:
    st.header("6 · Compare")
    rows = list(reversed(list_runs(state.runs_root())))  # newest first: run ids start with their start time
    if len(rows) < 2:
        st.info(
            "Comparing needs two runs or more under `runs/`: train another in **3 · Train**.",
            icon=":material/arrow_back:",
        )
        return
    by_id = {row["id"]: row for row in rows}
    names = st.multiselect(
        "Runs to compare",
        list(by_id),
        default=list(by_id)[:2],
        key="compare_runs",
        help="Two or more; the two newest are chosen at first.",
    )
    if len(names) < 2:
        st.info("Choose two runs or more.", icon=":material/checklist:")
        return
    chosen = [by_id[name] for name in names]
    configs = {row["id"]: runs.read_config(Path(row["path"])) for row in chosen}

    st.subheader("Summary")
    st.dataframe(
        summary_frame(chosen),
        hide_index=True,
        width="stretch",
        column_config={
            "best val accuracy": st.column_config.NumberColumn(format="%.3f"),
            "test accuracy": st.column_config.NumberColumn(format="%.3f", help="after `workbench evaluate`"),
        },
    )
    st.subheader("Curves")
    render_curves(chosen, configs)
    st.subheader("Config differences")
    render_diff(chosen, configs)
