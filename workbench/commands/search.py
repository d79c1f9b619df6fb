"""`workbench search DATA --space recipe|augment --strategy bayes|genetic|grid`: search the fine-tuning recipe
(or an augmentation policy) on your data; the winner is saved as a recipe file for `workbench train --recipe`.

Each trial is a short fine-tune on a stratified subset (the proxy); phase-1 features are computed once per
resolution and shared. Rerun with the same --search-dir to continue a stopped search.
"""

from __future__ import annotations

import argparse
import sys

from workbench.timefmt import format_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from workbench.config_fields import add_arguments as add_config_arguments
    from workbench.hparam_search.config import HParamSearchConfig

    add_config_arguments(parser, HParamSearchConfig, positional=("data",))
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines, only the result")


def config_from_args(args: argparse.Namespace):
    """The search the flags describe; a bad value is a `ValueError` naming the option."""
    from workbench.config_fields import overrides_from_args, with_overrides
    from workbench.hparam_search.config import HParamSearchConfig

    return with_overrides(HParamSearchConfig(), overrides_from_args(args, HParamSearchConfig)).validate()


class TrialPrinter:
    """Events listener: one line per trial."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def __call__(self, event: dict) -> None:
        if event["type"] != "trial":
            return
        status = event.get("status")
        if status == "start":
            options = " ".join(f"{k.removeprefix('recipe.')}={v}" for k, v in event["params"].items())
            eta = format_duration(event.get("eta_s"), "hms")
            text = f"trial {event['number']} [{event['finished']}/{event['trials']}] {options}  ETA {eta}"
        elif status == "trained":
            latency = f", {event['latency_ms']:.2f} ms/image" if event.get("latency_ms") is not None else ""
            shared = " (shared features)" if event.get("shared_features") else ""
            text = f"  val_accuracy {event['val_accuracy']:.4f}{latency} in {event['trial_seconds']:.0f} s{shared}"
        elif status == "pruned":
            text = f"  {event['reason']}"
        elif status == "interrupted":
            text = f"trial {event['number']} was interrupted last time; its parameters are queued again"
        else:
            return
        self.stream.write(text + "\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from workbench.hparam_search.search import run_search

    config = config_from_args(args)
    result = run_search(config, listeners=[] if args.quiet else [TrialPrinter()])
    best = result.chosen
    trained = sum(r["status"] == "trained" for r in result.rows)
    print(f"search: {result.search_dir} ({trained} trained of {len(result.rows)} trials, {result.seconds:.0f} s)")
    baseline = next((r for r in result.rows if r.get("baseline")), None)
    base = f"; the fixed recipe scored {baseline['val_accuracy']:.4f}" if baseline and baseline["val_accuracy"] else ""
    print(f"best: trial {best['number']} val_accuracy {best['val_accuracy']:.4f}{base}")
    print(f"      {best['params']}")
    if len(result.pareto) > 1 and config.objective != "accuracy":
        front = ", ".join(f"#{r['number']} {r['val_accuracy']:.3f}@{r['latency_ms']:.2f}ms" for r in result.pareto)
        print(f"Pareto front (accuracy @ latency): {front}")
    print(f"table:  {result.table_csv} (+ {result.table_json.name}); plot: {result.plot}")
    if result.warning:
        print(f"tie: {result.warning}", file=sys.stderr)
    if result.recipe_path is None:
        print("recipe: none saved, the winner is not separable from the others; --save-anyway keeps it anyway")
        return 0
    print(f"recipe: {result.recipe_path}; train with it: workbench train DATA --recipe {result.recipe_path}")
    return 0
