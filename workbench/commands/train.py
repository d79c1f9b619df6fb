"""`workbench train [DATA]`: fine-tune a variant, then evaluate and export the run.

The flags are generated from `RunConfig` (workbench.engine.config): its help texts, choices and
defaults are the single source of truth. Nested options take their leaf name
(`recipe.learning_rate` -> `--learning-rate`).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from workbench.config_fields import add_arguments as add_config_arguments
    from workbench.engine.config import RunConfig

    add_config_arguments(parser, RunConfig, positional=("data",))
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue runs/<id> from its last completed epoch, with its saved config",
    )
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation after training")
    parser.add_argument("--no-export", action="store_true", help="skip the export after training")
    from workbench.serving.registry import DEFAULT_FORMAT, format_names

    parser.add_argument(
        "--export-format",
        default=DEFAULT_FORMAT,
        choices=format_names(),
        help=f"export format after training (default: {DEFAULT_FORMAT})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output, only the final lines")


def _overrides(args: argparse.Namespace) -> dict:
    from workbench.config_fields import overrides_from_args
    from workbench.engine.config import RunConfig

    return overrides_from_args(args, RunConfig)


def run(args: argparse.Namespace) -> int:
    from workbench.engine.config import RunConfig, with_overrides

    # Bad options, a bad run to resume and unusable data are ValueErrors (DataError is one): exit code 2 from
    # `workbench.cli.main`; a run that fails (TrainingError) exits with 1.
    overrides = _overrides(args)
    if args.resume and overrides:
        raise ValueError(
            f"--resume continues a run with its saved config; drop {', '.join(sorted(overrides))} "
            f"(or edit {args.resume}/config.yaml)"
        )
    from workbench.hparam_search.recipe_file import apply_recipe_file, is_recipe_path

    if is_recipe_path(overrides.get("recipe_mode")):  # --recipe FILE: a search's winner, the flags given win
        overrides = apply_recipe_file(overrides["recipe_mode"], overrides)
    config = None if args.resume else with_overrides(RunConfig(), overrides).validate()

    from workbench.engine.progress import ProgressPrinter
    from workbench.engine.recipe import fine_tune, resume

    listeners = [] if args.quiet else [ProgressPrinter()]
    result = resume(args.resume, listeners=listeners) if args.resume else fine_tune(config, listeners=listeners)

    if not result.chief:
        print("worker done: the chief worker wrote the run")
        return 0
    best = "n/a" if result.best_val_accuracy is None else f"{result.best_val_accuracy:.4f}"
    print(f"run: {result.run_dir}")
    print(f"best val accuracy: {best}" + (" (stopped early by STOP file)" if result.stopped else ""))
    if result.warning:  # also the `warning` field of the run's done event
        print(f"warning: {result.warning}", file=sys.stderr)
    if result.terminated:  # SIGTERM: the run is saved and resumable; exit now instead of evaluating
        print(f"stopped by SIGTERM; continue it with `workbench train --resume {result.run_dir}`", file=sys.stderr)
        return 143  # 128 + SIGTERM, the shell's convention: the job did not complete
    if result.model_path is None:
        return 0
    if (code := _calibrate(result.run_dir, None if config is None else config.rejection)) != 0:
        return code
    if not args.no_evaluate and (code := _evaluate(result.run_dir)) != 0:
        return code
    if not args.no_export:
        return _export(result.run_dir, args.export_format)
    return 0


def _calibrate(run_dir, settings) -> int:
    """Fit the temperature and the rejection threshold on the validation split (`calibration.json`)."""
    from workbench.evaluation.calibrate import calibrate_run, summary_lines

    if _multi_label_thresholds(run_dir):
        return 0

    try:
        record = calibrate_run(run_dir, settings)
    except ValueError as exc:
        print(f"workbench train: calibration failed: {exc}", file=sys.stderr)
        return 1
    lines, warning = summary_lines(record)
    print("\n".join(lines))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _multi_label_thresholds(run_dir) -> bool:
    """A multi-label run has per-label thresholds (tuned by the engine) instead of a calibration: print them."""
    from pathlib import Path

    from workbench.evaluation.multilabel import THRESHOLDS_FILE, read_thresholds
    from workbench.terminal import printable

    thresholds = read_thresholds(run_dir)
    if thresholds is None:
        return False
    labels = [line.strip() for line in (Path(run_dir) / "labels.txt").read_text(encoding="utf-8").splitlines()]
    pairs = ", ".join(f"{printable(name)} {t:.2f}" for name, t in zip(labels, thresholds, strict=True))
    print(f"per-label thresholds (max F1 on validation, {THRESHOLDS_FILE}): {pairs}")
    print("calibration: skipped (multi-label run: each label has its own threshold instead)")
    return True


def _evaluate(run_dir) -> int:
    from workbench.evaluation import evaluate

    try:
        report = evaluate(run_dir)
    except ValueError as exc:
        print(f"workbench train: evaluation failed: {exc}", file=sys.stderr)
        return 1
    accuracy = report.get("accuracy") if isinstance(report, dict) else None
    if isinstance(report, dict) and report.get("kind") == "multi-label":
        from workbench.evaluation.multilabel import summary_lines

        print(f"test: {summary_lines(report)[0]} (report: {run_dir}/eval/report.json)")
    elif accuracy is not None:
        print(f"test accuracy: {accuracy:.4f} (report: {run_dir}/eval/report.json)")
    else:
        print(f"evaluation: {run_dir}/eval/report.json")
    return 0


def _export(run_dir, export_format: str) -> int:
    from workbench.serving.export import export

    try:
        path = export(run_dir, export_format)
    except ValueError as exc:
        print(f"workbench train: export failed: {exc}", file=sys.stderr)
        return 1
    print(f"exported ({export_format}): {path}")
    return 0
