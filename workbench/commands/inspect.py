"""`workbench inspect DATA`: run the safe ingest alone and print what it found."""

from __future__ import annotations

import argparse
import json
import tempfile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        nargs="?",
        default=None,
        help="folder of class folders, .zip archive or tfds:NAME (default: the embedded sample)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of each class for val (0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="share of each class for test (0.15)")
    parser.add_argument(
        "--group-by",
        default=None,
        metavar="REGEX",
        help="group-aware split: the first capture group of each file name is its group (default: the data's "
        "groups.csv if any)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep extracted files, normalised copies and manifest.json here "
        "(default: a temporary folder, removed afterwards)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines import ingest
    from workbench.engine.rundir import CONFIG_FILE

    if args.workdir and (Path(args.workdir) / CONFIG_FILE).exists():
        # Ingest writes manifest.json there, which would silently replace the run's own (hardening report, D).
        raise ValueError(
            f"{args.workdir} holds a run (it has {CONFIG_FILE}); inspect would replace its manifest.json. "
            "Give --workdir a new or empty folder"
        )
    # A DataError (unusable data) or a bad fraction is a ValueError: `workbench.cli.main` exits with 2.
    with tempfile.TemporaryDirectory(prefix="workbench-inspect-") as tmp:
        manifest = ingest(
            args.data,
            args.workdir or tmp,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            group_by=args.group_by,
        )
        report = manifest.report()
        text = manifest.format_report()
    audit = audit_line(args.data)
    if args.json:
        print(json.dumps(report | {"audit": audit}, indent=1, ensure_ascii=False))
    else:
        print(text)
        print(audit)
    return 0


def audit_line(data) -> str:
    """One line from the data's last audit (audits/<data name>/findings.json), read, never computed: inspect
    runs no backbone."""
    from workbench.audit.findings import FINDINGS_FILE, default_out, load_findings, one_line

    path = default_out(data) / FINDINGS_FILE
    if not path.is_file():
        return "audit: none yet (`workbench audit` finds duplicates, leakage, label errors and outliers)"
    try:
        findings = load_findings(path)
    except (ValueError, KeyError):
        return f"audit: {path} is unreadable; run `workbench audit` again"
    return f"audit ({findings['created']}, {path}): {one_line(findings['summary'])}"
