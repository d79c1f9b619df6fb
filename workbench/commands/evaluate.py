"""`workbench evaluate RUN`: confusion matrix, per-class report, top-k, worst mistakes, calibration and rejection."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="run directory (runs/<id>/) of a finished training run")
    parser.add_argument(
        "--data",
        default=None,
        help="evaluate on this data instead (folder, .zip or tfds:NAME; class names as in the run)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "all"),
        help="which split to evaluate (default: test)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="k of the top-k accuracy (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per prediction batch (default 32)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON instead of the table")
    add_tta_argument(parser)
    from workbench.config_fields import add_arguments as add_config_arguments
    from workbench.engine.config import RejectConfig

    group = parser.add_argument_group(
        "calibration and rejection: any of these fits calibration.json again on the validation split (the "
        "run's own options fill the others) before evaluating; --unknown-dir alone also scores those images"
    )
    add_config_arguments(group, RejectConfig)


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """`--tta` (flip) or `--tta crops`: shared by `evaluate` and `predict`."""
    from workbench.evaluation.tta import TTA_MODES

    parser.add_argument(
        "--tta",
        nargs="?",
        const="flip",
        default=None,
        choices=TTA_MODES,
        help="test-time augmentation: average over the image and its mirror (--tta, or --tta flip), or over five "
        "crops and their mirrors (--tta crops)",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from workbench.config_fields import overrides_from_args
    from workbench.engine.config import RejectConfig
    from workbench.evaluation import evaluate, summary_table, tta_summary
    from workbench.evaluation.calibrate import calibrate_run, settings_for, summary_lines
    from workbench.terminal import printable, printable_lines

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    overrides = overrides_from_args(args, RejectConfig)
    if overrides:
        record = calibrate_run(args.run_dir, settings_for(args.run_dir, overrides), batch_size=args.batch_size)
        lines, warning = summary_lines(record)
        print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    report = evaluate(
        args.run_dir,
        data=args.data,
        split=args.split,
        top_k=args.top_k,
        batch_size=args.batch_size,
        tta=args.tta,
        unknown_dir=overrides.get("unknown_dir") or None,
    )
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return 0
    if report.get("kind") == "multi-label":
        from workbench.evaluation.multilabel import summary_lines as multi_label_lines

        print(printable_lines("\n".join(multi_label_lines(report))))
    else:
        print(printable_lines(summary_table(report)))  # class names come from folder names
    if "tta" in report:
        print(tta_summary(report["tta"]))
    print(f"\nreport and plots: {printable(Path(report['files']['report']).parent)}/")
    return 0
