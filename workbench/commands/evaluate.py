"""`workbench evaluate RUN`: confusion matrix, per-class report, top-k and worst mistakes of a trained run."""

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


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from workbench.evaluation import evaluate, summary_table
    from workbench.terminal import printable, printable_lines

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    report = evaluate(args.run_dir, data=args.data, split=args.split, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return 0
    print(printable_lines(summary_table(report)))  # class names come from folder names
    print(f"\nreport and plots: {printable(Path(report['files']['report']).parent)}/")
    return 0
