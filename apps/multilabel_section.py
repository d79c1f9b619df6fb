"""Evaluate, for a multi-label run: the headline figures, the per-label table, and the report's plots."""

from __future__ import annotations

from pathlib import Path

import streamlit as st


def per_label_rows(report: dict) -> list[dict]:
    """One table row per label: its threshold and test figures."""
    return [
        {
            "label": name,
            "threshold": round(row["threshold"], 3),
            "precision": round(row["precision"], 3),
            "recall": round(row["recall"], 3),
            "F1": round(row["f1"], 3),
            "AP": None if row["average_precision"] is None else round(row["average_precision"], 3),
            "support": row["support"],
        }
        for name, row in report["per_label"].items()
    ]


def render_multi_label(report: dict) -> None:
    def shown(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    metrics = st.columns(4)
    metrics[0].metric("mAP", shown(report["mAP"]))
    metrics[1].metric("Macro F1", shown(report["macro_f1"]))
    metrics[2].metric("Micro F1", shown(report["micro_f1"]))
    metrics[3].metric("Exact label set", shown(report["subset_accuracy"]))
    st.caption(
        "Each label is predicted when its probability reaches its own threshold, tuned on the validation split "
        "for F1. mAP does not depend on the thresholds."
    )
    st.subheader("Per label")
    st.dataframe(per_label_rows(report), hide_index=True, width="stretch")
    files = report.get("files", {})
    left, right = st.columns(2)
    for column, key, title in (
        (left, "label_matrices", "Per-label 2×2 matrices"),
        (right, "cooccurrence", "Label co-occurrence"),
    ):
        column.subheader(title)
        if key in files and Path(files[key]).is_file():  # the PNG of `workbench evaluate`
            column.image(files[key], width="stretch")
        elif key == "cooccurrence":
            names = report["classes"]
            column.dataframe({"label": names, **dict(zip(names, zip(*report[key], strict=True), strict=True))})
        else:
            column.dataframe([{"label": name, **m} for name, m in report[key].items()], hide_index=True)
    st.subheader("Most confident mistakes")
    mistakes = report["mistakes"]
    if not mistakes:
        st.write("No mistakes: every label of every image was decided correctly.")
        return
    st.dataframe(
        [
            {
                "image": Path(m["path"]).name,
                "label": m["label"],
                "mistake": m["kind"],
                "probability": round(m["probability"], 3),
                "true labels": ", ".join(m["true_labels"]) or "none",
            }
            for m in mistakes
        ],
        hide_index=True,
        width="stretch",
    )
    if "mistakes" in files and Path(files["mistakes"]).is_file():
        st.image(files["mistakes"], width="stretch")
