"""`workbench scale-search DATA`: find width/depth/resolution coefficients (α, β, γ) for your data and budget.

Step 1 of the EfficientNet paper: φ = 1, α·β²·γ² ≈ 2, every candidate trained briefly on a small proxy
(a scaled-down B0 on a stratified subset at reduced resolution). The chosen coefficients are saved
as a scaling family, usable as `--variant <family>:phi=<float>`. Rerun with the same --search-dir to
continue a stopped search.
"""

from __future__ import annotations

import argparse
import sys

from workbench.timefmt import format_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from workbench.config_fields import add_arguments as add_config_arguments
    from workbench.scaling_search.config import SearchConfig

    add_config_arguments(parser, SearchConfig, positional=("data",))
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines, only the result")


def config_from_args(args: argparse.Namespace):
    """The search the flags describe; a bad value is a `ValueError` naming the option."""
    from workbench.config_fields import overrides_from_args, with_overrides
    from workbench.scaling_search.config import SearchConfig

    return with_overrides(SearchConfig(), overrides_from_args(args, SearchConfig)).validate()


def _eta(seconds: float | None) -> str:
    return f"ETA {format_duration(seconds, 'hms')}"


class TrialPrinter:
    """Events listener: one line per trial step, with the ETA of the remaining trials."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: dict) -> None:
        if event["type"] != "trial":  # errors are printed once, by `run`
            return
        status = event.get("status")
        if status == "start":
            self._print(
                f"trial {event['number']} [{event['trained']}/{event['trials']} trained] "
                f"α={event['alpha']:g} β={event['beta']:g} γ={event['gamma']:g} "
                f"(α·β²·γ² = {event['product']:.3f})  {_eta(event.get('eta_s'))}"
            )
        elif status in ("skipped", "duplicate"):
            self._print(f"  {status}: {event['reason']}")
        elif status == "training":
            self._print(
                f"  {event['resolution']} px, {event['flops'] / 1e6:.3g} MFLOPs, {event['params']:,} params, "
                f"{event['latency_ms']:.2f} ms/image: training"
            )
        elif status == "trained":
            self._print(
                f"  val_accuracy {event['val_accuracy']:.4f} (epoch {event.get('best_epoch')}), trained in "
                f"{event['train_seconds']:.0f} s  {_eta(event.get('eta_s'))}"
            )
        elif status == "interrupted":
            self._print(f"trial {event['number']} was interrupted last time; its candidate is queued again")


def run(args: argparse.Namespace) -> int:
    from workbench.scaling_search.search import run_search

    # Bad options or data are ValueErrors (DataError is one), which `workbench.cli.main` turns into exit code 2.
    config = config_from_args(args)
    result = run_search(config, listeners=[] if args.quiet else [TrialPrinter()])
    best = result.chosen
    trained = sum(r["status"] == "trained" for r in result.rows)
    print(f"search: {result.search_dir} ({trained} trained of {len(result.rows)} proposed, {result.seconds:.0f} s)")
    print(
        f"chosen: α={best['alpha']:g} β={best['beta']:g} γ={best['gamma']:g}  val_accuracy "
        f"{best['val_accuracy']:.4f} on the proxy ({best['flops'] / 1e6:.3g} MFLOPs, {best['params']:,} params)"
    )
    print(f"table:  {result.table_csv} (+ {result.table_json.name}); Pareto front: {result.plot}")
    print(
        f"family: {result.family.name} saved to {result.family_path}; use it as "
        f"--variant {result.family.name}:phi=1 (φ = 0 is B0 at 224 px)"
    )
    return 0
