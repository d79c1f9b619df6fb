"""`workbench scale-search DATA`: find width/depth/resolution coefficients (α, β, γ) for your data and budget.

Step 1 of the EfficientNet paper: φ = 1, α·β²·γ² ≈ 2, every candidate trained briefly on a small proxy
(a scaled-down B0 on a stratified subset at reduced resolution). The chosen coefficients are saved
as a scaling family, usable as `--variant <family>:phi=<float>`. Rerun with the same --search-dir to
continue a stopped search.
"""

from __future__ import annotations

import argparse
import sys


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (e.g. 1.0,2.0)") from None
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from workbench.scaling_search.config import EXECUTIONS, STRATEGIES, ProxyConfig, SearchConfig

    s, p = SearchConfig(), ProxyConfig()
    parser.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="image folder (one sub-folder per class), .zip of one, or tfds:NAME; empty = the embedded sample dataset",
    )
    g = parser.add_argument_group("search")
    g.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=s.strategy,
        help="grid: every feasible (α, β, γ) in turn (Optuna GridSampler); bayes: Bayesian "
        f"optimisation (Optuna TPESampler) (default: {s.strategy})",
    )
    g.add_argument(
        "--trials",
        type=int,
        default=s.trials,
        help=f"candidates to train; skipped ones do not count (default: {s.trials})",
    )
    g.add_argument(
        "--max-candidates",
        type=int,
        default=s.max_candidates,
        help=f"candidates to propose at most, skipped ones included (default: {s.max_candidates})",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=s.tolerance,
        help=f"allowed relative distance of α·β²·γ² from 2 (default: {s.tolerance})",
    )
    g.add_argument("--step", type=float, default=s.step, help=f"grid spacing of α, β, γ (default: {s.step})")
    for name in ("alpha", "beta", "gamma"):
        default = getattr(s, f"{name}_range")
        g.add_argument(
            f"--{name}-range",
            type=_pair,
            default=default,
            metavar="LOW,HIGH",
            help=f"range of {name} (default: {default[0]:g},{default[1]:g})",
        )
    g.add_argument("--seed", type=int, default=s.seed, help=f"seed of the sampler, subset and init (default: {s.seed})")
    b = parser.add_argument_group("budget (candidates over it are measured, never trained)")
    b.add_argument(
        "--max-flops",
        metavar="AMOUNT",
        help="FLOPs per image (multiply-adds x 2): absolute (150M, 1.2G) or a multiple of the proxy "
        "base network (2.2x)",
    )
    b.add_argument("--max-params", metavar="AMOUNT", help="parameters: absolute (1.5M) or a multiple of the base (3x)")
    b.add_argument(
        "--max-latency-ms", type=float, metavar="MS", help="milliseconds per image at batch 1 on this machine"
    )
    x = parser.add_argument_group("proxy (the small network and data every candidate trains on)")
    x.add_argument("--base-width", type=float, default=p.base_width, help=f"relative to B0 (default: {p.base_width})")
    x.add_argument("--base-depth", type=float, default=p.base_depth, help=f"relative to B0 (default: {p.base_depth})")
    x.add_argument(
        "--base-resolution", type=int, default=p.base_resolution, help=f"pixels at φ = 0 (default: {p.base_resolution})"
    )
    x.add_argument(
        "--train-per-class",
        type=int,
        default=p.train_per_class,
        help=f"training images per class in the subset (default: {p.train_per_class})",
    )
    x.add_argument(
        "--val-per-class",
        type=int,
        default=p.val_per_class,
        help=f"validation images per class scored (default: {p.val_per_class})",
    )
    x.add_argument("--epochs", type=int, default=p.epochs, help=f"epochs per candidate (default: {p.epochs})")
    x.add_argument("--batch-size", type=int, default=p.batch_size, help=f"(default: {p.batch_size})")
    x.add_argument(
        "--learning-rate",
        type=float,
        default=p.learning_rate,
        help=f"peak AdamW learning rate (default: {p.learning_rate})",
    )
    x.add_argument(
        "--execution",
        choices=EXECUTIONS,
        default=p.execution,
        help="graph or eager training; auto = eager for a schedule of a few steps (default: auto)",
    )
    x.add_argument(
        "--latency-repeats",
        type=int,
        default=s.latency_repeats,
        help=f"timed calls per latency measurement (median) (default: {s.latency_repeats})",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--family", help="name of the saved scaling family (default: search-<id>)")
    o.add_argument(
        "--families-dir", help="where families are saved (default: $WORKBENCH_FAMILIES or ~/.workbench/families)"
    )
    o.add_argument("--out", default=s.out, help=f"folder for a new search-<id>/ directory (default: {s.out})")
    o.add_argument("--search-dir", help="explicit search directory; an existing one is continued")
    o.add_argument("--quiet", action="store_true", help="no per-trial lines, only the result")


def config_from_args(args: argparse.Namespace):
    from workbench.scaling_search.config import Budget, ProxyConfig, SearchConfig

    proxy = ProxyConfig(
        base_width=args.base_width,
        base_depth=args.base_depth,
        base_resolution=args.base_resolution,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        execution=args.execution,
    )
    budget = Budget(flops=args.max_flops, params=args.max_params, latency_ms=args.max_latency_ms)
    return SearchConfig(
        data=args.data,
        strategy=args.strategy,
        trials=args.trials,
        max_candidates=args.max_candidates,
        tolerance=args.tolerance,
        step=args.step,
        alpha_range=args.alpha_range,
        beta_range=args.beta_range,
        gamma_range=args.gamma_range,
        budget=budget,
        proxy=proxy,
        family=args.family,
        families_dir=args.families_dir,
        seed=args.seed,
        latency_repeats=args.latency_repeats,
        out=args.out,
        search_dir=args.search_dir,
    ).validate()


def _eta(seconds) -> str:
    if seconds is None:
        return "ETA --:--"
    seconds = round(seconds)
    return f"ETA {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"workbench scale-search: {exc}", file=sys.stderr)
        return 2

    from pipelines import DataError
    from workbench.scaling_search.search import run_search

    try:
        result = run_search(config, listeners=[] if args.quiet else [TrialPrinter()])
    except (ValueError, DataError) as exc:
        print(f"workbench scale-search: {exc}", file=sys.stderr)
        return 1
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
