"""`workbench export RUN --format ...`: SavedModel (TF Serving), .keras or TFLite, with labels and a model card."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # light: the registry imports no TensorFlow; it is imported only when an export runs
    from workbench.serving.formats.tflite import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_INT8_DROP
    from workbench.serving.registry import DEFAULT_FORMAT, describe, format_names

    parser.add_argument("run_dir", metavar="RUN", help="run directory (runs/<id>/) of a finished training run")
    parser.add_argument(
        "--format",
        default=DEFAULT_FORMAT,
        choices=format_names(),
        help=f"{describe()}; default {DEFAULT_FORMAT}",
    )
    parser.add_argument("--out", default=None, help="export base directory (default: saved_models/<run id>)")
    parser.add_argument(
        "--version", type=int, default=None, help="SavedModel version number (default: the next free one)"
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="SavedModel only: add the signatures serving_tta (image bytes) and serving_tta_rgb (float images), "
        "which average the probabilities over the image and its mirror; serving_default is unchanged and stays "
        "the default",
    )

    parser.add_argument(
        "--int8-calibration-images",
        type=int,
        default=None,
        metavar="N",
        help="tflite-int8 only: training images that calibrate the int8 ranges (default: "
        f"{DEFAULT_CALIBRATION_IMAGES}, chosen by benchmarks/bench_int8.py)",
    )
    parser.add_argument(
        "--max-int8-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="tflite-int8 only: refuse the export (exit 2, nothing written) when int8 loses more than this many "
        f"accuracy points against float32 on the validation split (default: {DEFAULT_MAX_INT8_DROP:g})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="tflite-int8 only: export even when int8 loses more than --max-int8-drop (the model card says so)",
    )


def run(args: argparse.Namespace) -> int:
    from workbench.serving.export import export, read_card

    path = export(
        args.run_dir,
        args.format,
        out=args.out,
        version=args.version,
        tta=args.tta,
        int8_calibration_images=args.int8_calibration_images,
        max_int8_drop=args.max_int8_drop,
        force=args.force,
    )
    folder = path if path.is_dir() else path.parent
    print(f"exported {args.format} to {path}")
    print(f"labels and model card: {folder / 'labels.txt'}, {folder / 'model_card.md'}")
    card = read_card(folder)
    if card.get("tta"):
        names = ", ".join(card["tta"]["signatures"])
        print(f"test-time augmentation ({card['tta']['mode']}): signatures {names}; serving_default is unchanged")
    quantization = card.get("quantization")
    if quantization:
        _print_int8(quantization)
    return 0


def _print_int8(quantization: dict) -> None:
    if "int8_accuracy" in quantization:
        print(
            f"int8 accuracy {quantization['int8_accuracy']:.4f} vs {quantization['reference']} "
            f"{quantization['float32_accuracy']:.4f} on {quantization['num_images']} {quantization['split']} images: "
            f"drop {quantization['accuracy_drop_points']:.2f} points (limit {quantization['gate']['max_drop_points']:g}; "
            f"calibrated on {quantization['calibration_images']} images; top-1 agreement "
            f"{quantization['top1_agreement']:.4f})"
        )
    if quantization["gate"]["forced"]:
        print(f"exported anyway (--force): {quantization['gate']['refusal']}", file=sys.stderr)
