"""The model card written beside every export: what the model is, what it was trained and evaluated on.

One dict (`model_card.json`) and its rendering as Markdown (`model_card.md`); both come from the run
directory (config.yaml, manifest.json, eval/report.json), never from memory.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path


def _versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    import workbench

    return {
        "workbench": workbench.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _training_data(run) -> dict | None:
    if run.manifest_path is None:
        return None
    from pipelines.manifest import Manifest

    report = Manifest.load(run.manifest_path).report()
    return {
        "source": report["source"],
        "num_images": report["num_images"],
        "split_sizes": report["split_sizes"],
        "images_per_class": {name: counts["total"] for name, counts in report["counts"].items()},
        "quarantined": len(report["quarantined"]),
    }


def _evaluation(run) -> dict | None:
    path = run.path / "eval" / "report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("kind") == "multi-label":
        keys = ("split", "num_examples", "kind", "mAP", "micro_f1", "macro_f1", "subset_accuracy")
        return {key: report.get(key) for key in keys}
    return {
        "split": report.get("split"),
        "num_examples": report["num_examples"],
        "accuracy": report["accuracy"],
        "top_k": report["top_k"],
        "top_k_accuracy": report["top_k_accuracy"],
        "macro_f1": report["macro_avg"]["f1"],
        "weighted_f1": report["weighted_avg"]["f1"],
        "mean_loss": report["mean_loss"],
    }


def build_card(run, *, name: str, format: str, input: str, files: list[str], extra: dict | None = None) -> dict:
    """The model card of one export of `run` (a `workbench.serving.model_files.Run`).

    `format` is the export format's name and `input` its description of the model input
    (`ExportFormat.describe_input`); `extra` adds the format's own fields (signatures, quantization, and for a
    SavedModel `tta`: None, or the mode, views and names of its test-time augmentation signatures).
    """
    keys = ("weights", "epochs", "fine_tune_epochs", "batch_size", "augment", "seed")
    training = {key: run.config[key] for key in keys if key in run.config}
    card = {
        "name": name,
        "format": format,
        "files": files,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": {
            "variant": run.variant,
            "resolution": run.resolution,
            "num_classes": len(run.class_names),
            "classes": list(run.class_names),
            "parameters": int(run.model.count_params()),
            "input": input,
        },
        "training": training,
        "training_data": _training_data(run),
        "evaluation": _evaluation(run),
        "source_run": str(run.path.resolve()),
        "versions": _versions(),
    }
    if extra:
        card.update(extra)
    return card


def _markdown(card: dict) -> str:
    model = card["model"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"* Format: `{card['format']}` ({', '.join(card['files'])})",
        f"* Variant: `{model['variant']}`, input resolution {model['resolution']} px, "
        f"{model['parameters']:,} parameters",
        f"* Classes ({model['num_classes']}): {', '.join(model['classes'])}",
        f"* Input: {model['input']}",
        f"* Created: {card['created']} from run `{card['source_run']}`",
        "",
        "## Training data",
        "",
    ]
    data = card.get("training_data")
    if data:
        sizes = data["split_sizes"]
        lines += [
            f"* Source: `{data['source']}`",
            f"* {data['num_images']} images (train {sizes['train']}, val {sizes['val']}, test {sizes['test']}); "
            f"{data['quarantined']} files quarantined",
            "* Images per class: " + ", ".join(f"{k} {v}" for k, v in data["images_per_class"].items()),
        ]
    else:
        lines.append("* Not recorded (the run has no manifest.json).")
    if card.get("training"):
        lines += ["", "## Training", ""] + [f"* {k}: {v}" for k, v in card["training"].items()]
    lines += ["", "## Evaluation", ""]
    metrics = card.get("evaluation")
    if metrics and metrics.get("kind") == "multi-label":
        lines += [
            f"* Split `{metrics['split']}`, {metrics['num_examples']} images, multi-label",
            *(f"* {key}: {metrics[key]:.4f}" for key in ("mAP", "micro_f1", "macro_f1") if metrics[key] is not None),
        ]
        thresholds = (card.get("multi_label") or {}).get("thresholds") or {}
        lines.append("* Thresholds: " + ", ".join(f"{name} {t:.3f}" for name, t in thresholds.items()))
    elif metrics:
        lines += [
            f"* Split `{metrics['split']}`, {metrics['num_examples']} images",
            f"* Top-1 accuracy {metrics['accuracy']:.4f}, "
            f"top-{metrics['top_k']} accuracy {metrics['top_k_accuracy']:.4f}",
            f"* Macro F1 {metrics['macro_f1']:.4f}, weighted F1 {metrics['weighted_f1']:.4f}, "
            f"mean loss {metrics['mean_loss']:.4f}",
        ]
    else:
        lines.append("* Not evaluated yet: run `workbench evaluate RUN` before exporting to record metrics here.")
    quantization = card.get("quantization")
    if quantization:
        lines += ["", "## Quantization", "", *_quantization_lines(quantization)]
    if card.get("signatures"):
        lines += ["", "## Signatures", ""] + [f"* `{k}`: {v}" for k, v in card["signatures"].items()]
    if card.get("multi_label"):
        multi = card["multi_label"]
        where = "in the graph and here" if multi["in_graph"] else "here (`workbench predict` applies them)"
        lines += ["", "## Multi-label thresholds", "", f"* Per label, tuned on validation for F1, {where}:"]
        lines += [f"  * `{name}` {t:.4f}" for name, t in multi["thresholds"].items()]
    else:
        lines += ["", "## Calibration and rejection", "", *_calibration_lines(card.get("calibration"), card["format"])]
    if "tta" in card:  # formats with signatures say whether test-time augmentation ones are among them
        lines += ["", "## Test-time augmentation", "", _tta_line(card["tta"])]
    lines += ["", "## Versions", ""] + [f"* {k} {v}" for k, v in card["versions"].items()]
    return "\n".join(lines) + "\n"


def _quantization_lines(quantization: dict) -> list[str]:
    """The int8 figures (overall, the gate, then one line per class) of `tflite._gate`'s card entry."""
    per_class = quantization.get("per_class", {})
    gate = quantization.get("gate")
    lines = [f"* {k}: {v}" for k, v in quantization.items() if k not in ("per_class", "gate")]
    if gate:
        verdict = "passed" if gate["passed"] else "FAILED, exported anyway with --force"
        lines.append(f"* Accuracy gate (at most {gate['max_drop_points']:g} points lost): {verdict}")
    for name, figures in per_class.items():
        if figures["num_images"]:
            lines.append(
                f"  * `{name}` ({figures['num_images']} images): float32 {figures['float32_accuracy']:.4f}, "
                f"int8 {figures['int8_accuracy']:.4f}, drop {figures['drop_points']:.2f} points"
            )
    return lines


def _calibration_lines(calibration: dict | None, format: str) -> list[str]:
    if not calibration:
        return ["* None: the probabilities are the model's own softmax and every image gets a class."]
    if calibration.get("in_graph"):
        where = "constants of the graph"
    elif format == "keras":
        where = "not in this file (the trainable model): `workbench predict` applies them from this card"
    else:
        where = (
            "NOT applied by this model (its outputs are quantised, uncalibrated probabilities); export "
            "`tflite`, `tflite-fp16` or `savedmodel` for calibrated outputs and rejection"
        )
    lines = [f"* Temperature {calibration['temperature']:.4f} (probabilities are softmax(logits / T)); {where}."]
    if calibration["threshold"] is None:
        lines.append("* No rejection threshold: every image gets a class.")
    else:
        lines.append(
            f"* Rejection: {calibration['score']} >= {calibration['threshold']:.6g} accepts; below it the class is "
            "`unknown`, index -1."
        )
    return lines


def _tta_line(tta: dict | None) -> str:
    if not tta:
        return "* None: every signature predicts from the image alone (export with `--tta` to add TTA signatures)."
    names = ", ".join(f"`{name}`" for name in tta["signatures"])
    return (
        f"* Mode `{tta['mode']}` ({tta['views']} views of each image, probabilities averaged) in the signatures "
        f"{names}; `serving_default` is unchanged and remains the default."
    )


def write_card(directory: Path, card: dict) -> tuple[Path, Path]:
    """Write `model_card.json` and `model_card.md` into `directory`."""
    from pipelines.files import atomic_write_text

    json_path, md_path = directory / "model_card.json", directory / "model_card.md"
    atomic_write_text(json_path, json.dumps(card, indent=2) + "\n")
    atomic_write_text(md_path, _markdown(card))
    return json_path, md_path
