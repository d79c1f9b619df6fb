"""`workbench predict MODEL IMAGE...`: top-k classes of images with any exported model."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="run directory, SavedModel directory (saved_models/<name>[/<version>]), .keras or .tflite",
    )
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, GIF, BMP or WebP)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    from workbench.serving.predict import format_table, predict

    results = predict(args.model, args.images, top_k=args.top_k)
    print(json.dumps(results, indent=1, ensure_ascii=False) if args.json else format_table(results))
    return 0
