"""The `workbench` command line.

Each subcommand lives in `workbench/commands/<module>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`. Command modules keep their heavy
imports (TensorFlow, Keras) inside `run`, so `workbench --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# (command name, module under workbench.commands, one-line help). The single list of commands.
COMMANDS: list[tuple[str, str, str]] = [
    ("variants", "variants", "print the EfficientNet family table (resolution, parameters, FLOPs)"),
    ("inspect", "inspect", "check a dataset (folder, .zip, tfds:NAME) and print classes, splits and problems"),
    ("evaluate", "evaluate", "confusion matrix, per-class report, top-k and worst mistakes of a run (RUN/eval/)"),
    ("explain", "explain", "Grad-CAM overlay of an image for the predicted or a chosen class"),
    ("export", "export", "export a run as SavedModel (TF Serving), .keras or TFLite (float32, float16, int8)"),
    ("predict", "predict", "top-k classes of images with a run, SavedModel, .keras or .tflite model"),
    ("train", "train", "fine-tune a variant on DATA (none: the embedded sample), then evaluate and export"),
    (
        "scale-search",
        "scale_search",
        "search width/depth/resolution coefficients (α, β, γ) for DATA and a budget; saves a family",
    ),
    ("app", "app", "start the Streamlit workbench app in the browser (Data, Model, Train, Evaluate, Export)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"workbench.commands.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
