"""The `workbench` command line.

Each subcommand lives in `workbench/commands/<module>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`. Command modules keep their heavy
imports (TensorFlow, Keras) inside `run`, so `workbench --help` stays instant.

Exit codes, the same for every command (README, "Exit codes"): 0 success; 1 the job failed;
2 bad input or usage. Commands raise; `main` maps the exception to the code and prints one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import sys
import traceback

# (command name, module under workbench.commands, one-line help). The single list of commands.
COMMANDS: list[tuple[str, str, str]] = [
    ("variants", "variants", "print the EfficientNet family table (resolution, parameters, FLOPs)"),
    ("inspect", "inspect", "check a dataset (folder, .zip, tfds:NAME) and print classes, splits and problems"),
    ("audit", "audit", "data health: duplicates and split leakage, likely label errors, outliers; --apply fixes"),
    ("evaluate", "evaluate", "confusion matrix, per-class report, top-k and worst mistakes of a run (RUN/eval/)"),
    ("explain", "explain", "Grad-CAM overlay of an image for the predicted or a chosen class"),
    ("export", "export", "export a run as SavedModel (TF Serving), .keras or TFLite (float32, float16, int8)"),
    ("predict", "predict", "top-k classes of images with a run, SavedModel, .keras or .tflite model"),
    ("serve", "serve", "serve a model over HTTP: TF Serving's REST API, multipart /predict, /healthz, /metrics"),
    ("train", "train", "fine-tune a variant on DATA (none: the embedded sample), then evaluate and export"),
    ("lr-find", "lr_find", "sweep the head's learning rate on cached features; plot loss vs rate and suggest one"),
    ("runs", "runs", "table of the runs under runs/: data, variant, settings, val/test accuracy, time, status"),
    (
        "scale-search",
        "scale_search",
        "search width/depth/resolution coefficients (α, β, γ) for DATA and a budget; saves a family",
    ),
    (
        "search",
        "search",
        "search the fine-tuning recipe or an augmentation policy on DATA (bayes, genetic, grid); saves a recipe file",
    ),
    ("app", "app", "start the Streamlit workbench app in the browser (Data, Model, Train, Evaluate, Export)"),
]


# Errors that mean the input or the options are wrong: DataError, ModelFileError and config errors are
# ValueErrors; a missing, unreadable or unrecognised file is an OSError (PIL's UnidentifiedImageError too).
USAGE_ERRORS = (ValueError, OSError)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # given before or after COMMAND; absent from a subcommand: the global value
        help="show TensorFlow's own log lines and the traceback of a failure",
    )
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0], parents=[verbose])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"workbench.commands.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text, parents=[verbose])
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code: 0 success, 1 the job failed, 2 bad input or usage."""
    from workbench.terminal import printable_lines

    args = build_parser().parse_args(argv)  # usage errors: argparse exits with 2
    verbose = getattr(args, "verbose", False)
    name = f"workbench {args.command}"
    with quiet_tensorflow(enabled=not verbose):
        try:
            return int(args._run(args) or 0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except USAGE_ERRORS as exc:
            if verbose:
                traceback.print_exc()
            print(f"{name}: {printable_lines(str(exc))}", file=sys.stderr)  # messages quote labels and paths
            return EXIT_USAGE
        except Exception as exc:  # the job failed (TrainingError) or a bug: one line, the traceback on request
            if verbose:
                traceback.print_exc()
            if problem := named_file_problem(exc):  # data that changed since the ingest: the user's to fix
                print(f"{name}: {printable_lines(problem)}", file=sys.stderr)
                return EXIT_USAGE
            hint = "" if verbose else " (rerun with --verbose for the traceback)"
            print(f"{name}: failed: {type(exc).__name__}: {printable_lines(str(exc))}{hint}", file=sys.stderr)
            return EXIT_FAILED


def named_file_problem(exc: BaseException) -> str | None:
    """The message `pipelines.dataset` puts in a TensorFlow error when it cannot decode a file, else None.

    TensorFlow wraps it in an InvalidArgumentError with graph context (`assertion failed: [...]`);
    the user needs only the sentence naming the file and the fix.
    """
    from pipelines.errors import UNREADABLE_FILE_MESSAGE

    text = str(exc)
    start = text.find(UNREADABLE_FILE_MESSAGE)
    if start < 0:
        return None
    end = text.find("]", start)
    return text[start : end if end > 0 else None].strip()


# ---------------------------------------------------------------------------------------------- quiet TensorFlow
@contextlib.contextmanager
def quiet_tensorflow(enabled: bool = True):
    """No TensorFlow C++ log lines while the block runs, unless the user set TF_CPP_MIN_LOG_LEVEL.

    Level 3 silences TensorFlow's C++ logging, including the `E0000 ... failed call to cuInit` of a machine
    without a GPU. The lines its libraries log while they load come before absl logging is set up and
    ignore that level, so the first `import tensorflow` runs with file descriptor 2 sent to /dev/null.
    The variable stays set once TensorFlow is loaded: it is read then, and child processes inherit it.
    """
    if not enabled or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    finder = None
    if "tensorflow" not in sys.modules:
        finder = _SilentImport("tensorflow")
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:  # TensorFlow was not imported: leave the process as it was
            sys.meta_path.remove(finder)
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached process): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _SilentImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds one top-level module with the other finders and executes it with stderr silenced."""

    def __init__(self, name: str):
        self.name = name
        self.loader = None

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once: submodules and later imports go the ordinary way
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # the module keeps its real loader
        with _stderr_to_devnull():
            self.loader.exec_module(module)
