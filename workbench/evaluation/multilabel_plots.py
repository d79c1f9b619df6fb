"""PNG plots of a multi-label report: per-label bars, the per-label 2x2 matrices, label co-occurrence, and the
most confident mistakes. Same drawing rules as `plots` (explicit Agg canvas, no pyplot)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from workbench.evaluation.plots import _label_font_size, _new_figure


def plot_per_label(report: dict, path: Path) -> Path:
    """Horizontal grouped bars of precision, recall, F1 and average precision per label."""
    names = report["classes"]
    n = len(names)
    rows = report["per_label"]
    figure = _new_figure(8, float(np.clip(1.5 + 0.4 * n, 3, 40)))
    axes = figure.add_subplot()
    y = np.arange(n)
    height = 0.2
    bars = (
        (-1.5 * height, "precision", "#4c72b0"),
        (-0.5 * height, "recall", "#55a868"),
        (0.5 * height, "f1", "#c44e52"),
        (1.5 * height, "average_precision", "#8172b2"),
    )
    for offset, metric, colour in bars:
        values = [rows[name][metric] or 0.0 for name in names]
        axes.barh(y + offset, values, height=height, label=metric.replace("_", " "), color=colour)
    labels = [f"{name} (n={rows[name]['support']}, t={rows[name]['threshold']:.2f})" for name in names]
    axes.set_yticks(y, labels=labels, fontsize=_label_font_size(n))
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("score")
    axes.set_title(f"Per-label scores (mAP {report['mAP'] or 0:.3f}, macro F1 {report['macro_f1'] or 0:.3f})")
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path)
    return path


def plot_label_matrices(report: dict, path: Path, columns: int = 5) -> Path:
    """One 2x2 matrix per label: rows true (yes, no), columns predicted (yes, no), counts in the cells."""
    names = report["classes"]
    columns = min(columns, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _new_figure(2.4 * columns, 2.4 * rows)
    for i, name in enumerate(names):
        m = report["label_matrices"][name]
        cells = np.array([[m["tp"], m["fn"]], [m["fp"], m["tn"]]])
        shares = cells / np.maximum(cells.sum(axis=1, keepdims=True), 1)
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (r, c), count in np.ndenumerate(cells):
            axes.text(c, r, str(count), ha="center", va="center", color="white" if shares[r, c] > 0.5 else "black")
        axes.set_xticks([0, 1], labels=["yes", "no"], fontsize=8)
        axes.set_yticks([0, 1], labels=["yes", "no"], fontsize=8)
        axes.set_title(name, fontsize=9)
    figure.suptitle("Per label: true (rows) against predicted (columns)")
    figure.savefig(path)
    return path


def plot_cooccurrence(report: dict, path: Path) -> Path:
    """Heatmap of how often two labels are on the same image (true labels); the diagonal is each label's count."""
    names = report["classes"]
    n = len(names)
    counts = np.asarray(report["cooccurrence"])
    side = float(np.clip(2.5 + 0.3 * n, 5, 24))
    figure = _new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Purples", interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02, label="images with both labels")
    font = _label_font_size(n)
    axes.set_xticks(range(n), labels=names, rotation=90, fontsize=font)
    axes.set_yticks(range(n), labels=names, fontsize=font)
    if n <= 20:
        top = max(int(counts.max()), 1)
        for (r, c), count in np.ndenumerate(counts):
            colour = "white" if count > top / 2 else "black"
            axes.text(c, r, str(count), ha="center", va="center", color=colour, fontsize=font)
    axes.set_title(f"Label co-occurrence ({report['num_examples']} images)")
    figure.savefig(path)
    return path


def plot_mistakes(report: dict, path: Path, columns: int = 4, shown: int = 12) -> Path:
    """A gallery of the most confident wrong (image, label) decisions."""
    from PIL import Image

    examples = report["mistakes"][:shown]
    count = max(len(examples), 1)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = _new_figure(3 * columns, 3.3 * rows)
    if not examples:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no mistakes", ha="center", va="center")
    for i, example in enumerate(examples):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.axis("off")
        try:
            with Image.open(example["path"]) as image:
                axes.imshow(np.asarray(image.convert("RGB")))
        except (OSError, TypeError, ValueError):
            axes.text(0.5, 0.5, "image unreadable", ha="center", va="center")
        sign = "+" if example["kind"] == "false positive" else "-"
        axes.set_title(
            f"{sign}{example['label']} p={example['probability']:.2f}\ntrue: {', '.join(example['true_labels']) or '-'}",
            fontsize=8,
        )
    figure.suptitle("Most confident mistakes (+ false positive, - false negative)")
    figure.savefig(path)
    return path
