"""`workbench export RUN --format ...`: SavedModel (TF Serving), .keras or TFLite, with labels and a model card."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # light: the registry imports no TensorFlow; it is imported only when an export runs
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


def run(args: argparse.Namespace) -> int:
    from workbench.serving.export import export, read_card

    path = export(args.run_dir, args.format, out=args.out, version=args.version, tta=args.tta)
    folder = path if path.is_dir() else path.parent
    print(f"exported {args.format} to {path}")
    print(f"labels and model card: {folder / 'labels.txt'}, {folder / 'model_card.md'}")
    card = read_card(folder)
    if card.get("tta"):
        names = ", ".join(card["tta"]["signatures"])
        print(f"test-time augmentation ({card['tta']['mode']}): signatures {names}; serving_default is unchanged")
    quantization = card.get("quantization")
    if quantization and "int8_accuracy" in quantization:
        print(
            f"int8 accuracy {quantization['int8_accuracy']:.4f} vs {quantization['reference']} "
            f"{quantization['float32_accuracy']:.4f} on {quantization['num_images']} {quantization['split']} images "
            f"(top-1 agreement {quantization['top1_agreement']:.4f})"
        )
    return 0
