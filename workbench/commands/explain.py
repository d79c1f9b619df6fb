"""`workbench explain RUN IMAGE`: a Grad-CAM overlay of the image for the predicted or a chosen class."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="RUN", help="run directory (runs/<id>/) or a .keras model")
    parser.add_argument("image", metavar="IMAGE", help="image file (JPEG, PNG, GIF or BMP)")
    parser.add_argument(
        "--class", dest="class_name", default=None, help="class to explain (default: the predicted class)"
    )
    parser.add_argument(
        "--out", default=None, help="output PNG (default: RUN/explain/<image>_<class index>-<class>.png)"
    )


def run(args: argparse.Namespace) -> int:
    from workbench.evaluation.explain import explain
    from workbench.terminal import printable

    result = explain(args.model, args.image, class_name=args.class_name, out=args.out)
    print(
        f"predicted {printable(result['predicted'])}; Grad-CAM of class {printable(result['class'])} "
        f"(p={result['probability']:.3f}) written to {printable(result['out'])}"
    )
    return 0
