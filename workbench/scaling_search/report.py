"""The search's outputs: the results table (CSV + JSON), the Pareto front and its plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

COLUMNS = (
    "number",
    "status",
    "alpha",
    "beta",
    "gamma",
    "product",
    "width",
    "depth",
    "resolution",
    "flops",
    "flops_ratio",
    "params",
    "latency_ms",
    "val_accuracy",
    "train_seconds",
    "reason",
)
METRIC_LABELS = {
    "flops": "FLOPs per image (2 × multiply-adds)",
    "params": "parameters",
    "latency_ms": "latency per image at batch 1 (ms)",
}


def pareto_front(rows: list[dict], metric: str) -> list[dict]:
    """Trained rows no other trained row beats on both accuracy (higher) and `metric` (lower),
    sorted by cost."""
    trained = sorted((r for r in rows if r["status"] == "trained"), key=lambda r: (r[metric], -r["val_accuracy"]))
    front, best = [], float("-inf")
    for row in trained:
        if row["val_accuracy"] > best:
            front.append(row)
            best = row["val_accuracy"]
    return front


def choose(rows: list[dict]) -> dict | None:
    """The most accurate trained candidate; ties go to the cheaper one (fewer FLOPs)."""
    trained = [r for r in rows if r["status"] == "trained"]
    return max(trained, key=lambda r: (r["val_accuracy"], -r["flops"]), default=None)


def write_table(
    rows: list[dict], directory: Path, extra: dict, columns: tuple[str, ...] = COLUMNS
) -> tuple[Path, Path]:
    """results.csv (`columns`) and results.json (`extra` and every row) in `directory` (also `workbench search`'s)."""
    from workbench.engine.rundir import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    csv_path, json_path = directory / "results.csv", directory / "results.json"
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps({**extra, "trials": rows}, indent=2) + "\n")
    return csv_path, json_path


def plot_pareto(
    rows: list[dict],
    metric: str,
    path: Path,
    chosen: dict | None,
    title: str,
    *,
    label=None,
    xlabel: str | None = None,
) -> Path:
    """Accuracy against cost: every trained candidate, the front joined by a line, the choice ringed.
    `label(row)` names the front's points (default: the coefficients); `xlabel` the cost axis."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    from workbench.engine.rundir import atomic_path

    trained = [r for r in rows if r["status"] == "trained"]
    front = pareto_front(rows, metric)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter(
        [r[metric] for r in trained],
        [r["val_accuracy"] for r in trained],
        color="#9aa5b1",
        label="trained candidates",
        zorder=2,
    )
    ax.plot(
        [r[metric] for r in front],
        [r["val_accuracy"] for r in front],
        "-o",
        color="#1f6feb",
        label="Pareto front",
        zorder=3,
    )
    for r in front:
        ax.annotate(
            label(r) if label else f"α{r['alpha']:g} β{r['beta']:g} γ{r['gamma']:g}",
            (r[metric], r["val_accuracy"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    if chosen is not None:
        ax.scatter(
            [chosen[metric]],
            [chosen["val_accuracy"]],
            s=180,
            facecolors="none",
            edgecolors="#d1242f",
            linewidths=2,
            label="chosen",
            zorder=4,
        )
    ax.set_xlabel(xlabel or METRIC_LABELS[metric])
    ax.set_ylabel("validation accuracy (proxy)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
