"""PNG plots of an evaluation report: confusion heatmap, per-class bars, misclassified gallery, reliability.

Figures are built with the object-oriented matplotlib API on an explicit Agg canvas (never pyplot),
so plotting changes no global backend state and works on headless machines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _label_font_size(num_classes: int) -> float:
    # Shrink tick labels as classes grow so 100 names still fit beside a 100x100 grid.
    return float(np.clip(260 / max(num_classes, 1), 4, 11))


def plot_confusion_matrix(report: dict, path: Path) -> Path:
    """Heatmap of the row-normalised confusion matrix; counts written in the cells up to 20 classes.

    The figure grows with the number of classes (about 0.22 inch per class, 5 to 24 inches), so the
    grid stays readable from 2 up to 100 classes.
    """
    names = report["classes"]
    n = len(names)
    counts = np.asarray(report["confusion_matrix"])
    normalised = np.asarray(report["confusion_matrix_normalized"])
    side = float(np.clip(2.5 + 0.22 * n, 5, 24))
    figure = _new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02, label="share of true class")
    font = _label_font_size(n)
    axes.set_xticks(range(n), labels=names, rotation=90, fontsize=font)
    axes.set_yticks(range(n), labels=names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix ({report['num_examples']} images, accuracy {report['accuracy']:.3f})")
    if n <= 20:
        for t in range(n):
            for p in range(n):
                if counts[t, p]:
                    colour = "white" if normalised[t, p] > 0.5 else "black"
                    axes.text(p, t, str(counts[t, p]), ha="center", va="center", color=colour, fontsize=font)
    figure.savefig(path)
    return path


def plot_per_class(report: dict, path: Path) -> Path:
    """Horizontal grouped bars of precision, recall and F1 per class (one row per class)."""
    names = report["classes"]
    n = len(names)
    rows = report["per_class"]
    figure = _new_figure(8, float(np.clip(1.5 + 0.3 * n, 3, 40)))
    axes = figure.add_subplot()
    y = np.arange(n)
    height = 0.27
    bars = ((-height, "precision", "#4c72b0"), (0, "recall", "#55a868"), (height, "f1", "#c44e52"))
    for offset, metric, colour in bars:
        axes.barh(y + offset, [rows[name][metric] for name in names], height=height, label=metric, color=colour)
    axes.set_yticks(y, labels=[f"{name} (n={rows[name]['support']})" for name in names], fontsize=_label_font_size(n))
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("score")
    axes.set_title("Per-class precision, recall and F1")
    axes.legend(loc="lower right")
    figure.savefig(path)
    return path


def plot_misclassified(report: dict, path: Path, columns: int = 4) -> Path:
    """A gallery of the highest-loss misclassified images, titled `true → predicted (confidence)`."""
    from PIL import Image

    examples = report["misclassified"]
    count = max(len(examples), 1)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = _new_figure(3 * columns, 3.2 * rows)
    if not examples:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for i, example in enumerate(examples):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.axis("off")
        try:
            with Image.open(example["path"]) as image:
                axes.imshow(np.asarray(image.convert("RGB")))
        except (OSError, TypeError, ValueError):
            axes.text(0.5, 0.5, "image unreadable", ha="center", va="center")
        axes.set_title(
            f"{example['true']} → {example['predicted']}\np={example['confidence']:.2f}, loss {example['loss']:.2f}",
            fontsize=9,
        )
    figure.suptitle("Highest-loss misclassified images")
    figure.savefig(path)
    return path


def plot_reliability(calibration: dict, path: Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin, before and after temperature
    scaling, over the diagonal of perfect calibration; the bars below show how many images each bin holds."""
    figure = _new_figure(6, 6.5)
    axes, counts = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    curves = [("reliability_before", "before", "#c44e52", calibration["ece_before"])]
    if calibration["fitted"]:
        label = f"after (T = {calibration['temperature']:.2f})"
        curves.append(("reliability_after", label, "#4c72b0", calibration["ece_after"]))
    for key, label, colour, ece in curves:
        bins = [b for b in calibration[key] if b["count"]]
        axes.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            color=colour,
            label=f"{label}: ECE {ece:.3f}",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability ({calibration['bins']} bins)")
    axes.legend(loc="upper left")
    shown = calibration["reliability_after" if calibration["fitted"] else "reliability_before"]
    width = 1 / len(shown)
    counts.bar([b["low"] + width / 2 for b in shown], [b["count"] for b in shown], width=width * 0.9, color="#999")
    counts.set_xlabel("confidence (top-1 probability)")
    counts.set_ylabel("images")
    figure.savefig(path)
    return path
