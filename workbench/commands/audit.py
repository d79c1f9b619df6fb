"""`workbench audit DATA`: duplicates and split leakage, likely label errors, outliers and statistics.

`workbench audit --apply FINDINGS.json` turns the chosen actions of a findings file into a new dataset version.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        nargs="?",
        default=None,
        help="folder of class folders, .zip archive or tfds:NAME (default: the embedded sample); not with --apply",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for findings.json, summary.txt, manifest.json and the cached features (default: "
        "audits/<data name>; the same folder again reuses the features). With --apply: the new dataset version's "
        "folder (default: <findings folder>/version-<id>)",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON instead of the summary")
    parser.add_argument("--variant", default="lite0", help="backbone whose pooled features are compared (lite0)")
    parser.add_argument("--weights", default="imagenet", help="its weights: imagenet (default), none or a path")
    parser.add_argument("--image-size", type=int, default=None, help="input size in pixels (the variant's own)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per feature batch (64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the cross-validation (0)")
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
        "--apply",
        metavar="FINDINGS",
        default=None,
        help="write a new dataset version from FINDINGS.json's actions (keep/drop/relabel); never touches the "
        "originals",
    )
    parser.add_argument(
        "--accept",
        default="",
        metavar="KINDS",
        help="with --apply: take the audit's suggested action for these kinds, comma-separated "
        "(duplicates,label_errors,outliers or all); other entries keep the action written in the file",
    )


def run(args: argparse.Namespace) -> int:
    from workbench.audit.findings import format_text
    from workbench.terminal import printable_lines

    if args.apply:
        if args.data is not None:
            raise ValueError("give either DATA (to audit) or --apply FINDINGS.json (to write a new version), not both")
        from workbench.audit.apply import apply_findings, parse_kinds

        version = apply_findings(args.apply, args.out, accept=parse_kinds(args.accept))
        info = version.info
        print(
            printable_lines(
                f"dataset version {info['id']} in {version.path}: {info['images']} images "
                f"({info['dropped']} dropped, {info['relabelled']} relabelled; links to the original files)\n"
                f"train on it with: workbench train {version.path}"
            )
        )
        return 0
    if args.accept:
        raise ValueError("--accept goes with --apply FINDINGS.json")
    from workbench.audit import run_audit

    findings = run_audit(
        args.data,
        args.out,
        variant=args.variant,
        weights=args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        group_by=args.group_by,
        progress=None if args.json else lambda msg: print(f"audit: {msg}", flush=True),
    )
    if args.json:
        print(json.dumps(findings, indent=1, ensure_ascii=False))
    else:
        print(printable_lines(format_text(findings)))
    return 0
