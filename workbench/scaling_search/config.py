"""Typed options of a scaling search (no TensorFlow here: the CLI reads them cheaply).

Declared with `config_fields.option` like `RunConfig`: the `workbench scale-search` flags, their help
and defaults are generated from these fields. `SearchConfig` is saved as `search.json` in the search directory; rerunning a search in the
same directory continues it, and refuses options that would change what finished trials mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workbench.config_fields import Config, check_choices, option
from workbench.engine.config import AUGMENTS, DATA_HELP

STRATEGIES = ("grid", "bayes", "genetic")
COST_METRICS = ("flops", "params", "latency_ms")
EXECUTIONS = ("auto", "graph", "eager")
# Tracing the train and test functions of an EfficientNet costs ~15 s on 2 CPU cores; an eager step
# of a tiny proxy ~0.5 s. Below this many steps per trial, eager is faster.
EAGER_MAX_STEPS = 24

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_AMOUNT = re.compile(r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>x|[kmgt]?)\s*$", re.IGNORECASE)


def parse_amount(option: str, text: str | float | int, *, relative_ok: bool = True) -> tuple[float, bool]:
    """'2x' -> (2.0, True); '150M' -> (1.5e8, False); 3e6 -> (3e6, False)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, relative = float(text), False
    else:
        match = _AMOUNT.match(str(text))
        if not match:
            raise ValueError(
                f"{option}={text!r} is not an amount: give a number with an optional k/M/G suffix "
                f"(e.g. 150M){' or a multiple of the base network (e.g. 2x)' if relative_ok else ''}"
            )
        unit = match.group("unit").lower()
        relative = unit == "x"
        value = float(match.group("num")) * (1.0 if relative else _SUFFIX[unit])
        if relative and not relative_ok:
            raise ValueError(f"{option}={text!r}: a multiple is not allowed here; give an absolute value")
    if value <= 0:
        raise ValueError(f"{option}={text!r} must be greater than 0")
    return value, relative


@dataclass
class Budget:
    """Limits a candidate (at φ = 1 of the proxy) must meet to be trained; None = no limit.
    Multiples ('2.2x') are of the proxy base network at φ = 0."""

    flops: str | None = option(
        None,
        "FLOPs per image (multiply-adds x 2), as `workbench variants` reports them: absolute (150M, 1.2G) "
        "or a multiple of the proxy base network (2.2x)",
        flag="--max-flops",
        metavar="AMOUNT",
    )
    params: str | None = option(
        None, "parameters: absolute (1.5M) or a multiple of the base (3x)", flag="--max-params", metavar="AMOUNT"
    )
    latency_ms: float | None = option(
        None,
        "milliseconds per image at batch 1 on this machine, timed on the built model",
        flag="--max-latency-ms",
        metavar="MS",
    )

    def validate(self) -> Budget:
        if self.flops is not None:
            parse_amount("--max-flops", self.flops)
        if self.params is not None:
            parse_amount("--max-params", self.params)
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise ValueError(f"--max-latency-ms={self.latency_ms} must be greater than 0")
        return self

    def limits(self, base_cost: dict[str, float]) -> dict[str, float]:
        """Absolute limits per cost metric, multiples resolved against the base network's cost."""
        out: dict[str, float] = {}
        for metric, text in (("flops", self.flops), ("params", self.params)):
            if text is None:
                continue
            value, relative = parse_amount(f"--max-{metric}", text)
            out[metric] = value * base_cost[metric] if relative else value
        if self.latency_ms is not None:
            out["latency_ms"] = float(self.latency_ms)
        return out

    def primary_metric(self) -> str:
        """The cost the Pareto plot is drawn against: the budgeted one (FLOPs when none is)."""
        for metric, value in (("latency_ms", self.latency_ms), ("params", self.params), ("flops", self.flops)):
            if value is not None:
                return metric
        return "flops"


@dataclass
class ProxyConfig:
    """The proxy every candidate trains on: a scaled-down B0, a stratified subset, a short schedule.

    base_width/base_depth/base_resolution describe the base network at φ = 0 relative to B0 (as
    in `ScalingFamily`); each candidate is that base at φ = 1 of its own (α, β, γ).
    """

    base_width: float = option(0.5, "width of the proxy base network at φ = 0, relative to B0")
    base_depth: float = option(0.5, "depth of the proxy base network at φ = 0, relative to B0")
    base_resolution: int = option(64, "input resolution of the proxy base network at φ = 0, in pixels")
    train_per_class: int = option(100, "training images per class in the stratified subset")
    # All candidates score on the same validation images.
    val_per_class: int = option(50, "validation images per class scored")
    epochs: int = option(5, "epochs per candidate")
    batch_size: int = option(32, "images per step")
    learning_rate: float = option(
        5e-3, "peak AdamW learning rate (from random init: higher than the fine-tuning recipe's 1e-3)"
    )
    weight_decay: float = option(0.004, "AdamW decoupled weight decay")
    label_smoothing: float = option(0.1, "label smoothing of the categorical cross-entropy")
    warmup_fraction: float = option(0.1, "fraction of the steps spent warming the learning rate up linearly from 0")
    augment: str = option("none", "augmentation preset of the training images", AUGMENTS)
    # Keras's BatchNormalization momentum of 0.99 needs hundreds of steps before the moving statistics
    # that validation uses reflect the data; after a short from-scratch schedule every candidate would
    # score at chance. 0.9 settles within a few dozen steps.
    bn_momentum: float = option(0.9, "BatchNormalization momentum of the proxy (0.9 settles in a few dozen steps)")
    # graph: trace fit once (seconds of tracing, then fast steps); eager: no tracing, slow steps.
    execution: str = option(
        "auto",
        f"graph or eager training; auto = eager when the schedule is at most {EAGER_MAX_STEPS} steps",
        EXECUTIONS,
    )

    def validate(self) -> ProxyConfig:
        for name in ("base_width", "base_depth", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"proxy {name}={getattr(self, name)} must be greater than 0")
        for name in ("base_resolution", "train_per_class", "val_per_class", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"proxy {name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"proxy bn_momentum={self.bn_momentum} must be in [0, 1), e.g. 0.9")
        if self.base_resolution < 16:
            raise ValueError(
                f"proxy base_resolution={self.base_resolution} px is too small: use 16 or more "
                "(the network downsamples 32x)"
            )
        return self


@dataclass
class SearchConfig(Config):
    """One scaling search. `trials` counts trained candidates; candidates outside the constraint or
    the budget are recorded as skipped and do not count (they cost a model build at most)."""

    data: str | None = option(None, DATA_HELP)
    strategy: str = option(
        "grid",
        "grid: every feasible (α, β, γ) in turn (Optuna GridSampler); bayes: Bayesian optimisation (Optuna "
        "TPESampler); genetic: a genetic algorithm (Optuna NSGAIISampler, small generations)",
        STRATEGIES,
    )
    trials: int = option(8, "candidates to train; skipped ones do not count")
    # Ends a search whose budget rejects most candidates.
    max_candidates: int = option(200, "candidates to propose at most, skipped ones included")
    tolerance: float = option(0.05, "allowed relative distance of α·β²·γ² from 2")
    step: float = option(0.05, "grid spacing of α, β, γ")
    alpha_range: tuple[float, float] = option((1.0, 2.0), "range of α (width multiplier)", metavar="LOW,HIGH")
    beta_range: tuple[float, float] = option((1.0, 1.5), "range of β (depth multiplier)", metavar="LOW,HIGH")
    gamma_range: tuple[float, float] = option((1.0, 1.5), "range of γ (resolution multiplier)", metavar="LOW,HIGH")
    # option turns a dataclass default into a default_factory, so no instance is shared.
    budget: Budget = option(Budget(), "budget (candidates over it are measured, never trained)")  # noqa: RUF009
    proxy: ProxyConfig = option(  # noqa: RUF009
        ProxyConfig(), "proxy (the small network and data every candidate trains on)"
    )
    family: str | None = option(None, "name of the saved scaling family; empty = search-<id>")
    families_dir: str | None = option(
        None, "where families are saved; empty = $WORKBENCH_FAMILIES or ~/.workbench/families"
    )
    seed: int = option(0, "seed of the sampler, subset and init")
    latency_repeats: int = option(20, "timed calls per latency measurement (the median is kept)")
    out: str = option("runs", "folder for a new search-<id>/ directory")
    search_dir: str | None = option(None, "explicit search directory; an existing one is continued")
    save_anyway: bool = option(
        False, "save the winner's family even when it is not clearly above chance or ahead of the runner-up"
    )

    # Options that may change between the runs of one search (the rest must not).
    RESUMABLE_CHANGES = ("trials", "max_candidates", "family", "families_dir", "out", "search_dir", "save_anyway")

    def validate(self) -> SearchConfig:
        check_choices(self)
        if self.trials < 1 or self.max_candidates < 1:
            raise ValueError(f"trials={self.trials} and max_candidates={self.max_candidates} must be at least 1")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance={self.tolerance} must be in [0, 1), e.g. 0.05")
        if not 0 < self.step <= 1:
            raise ValueError(f"step={self.step} must be in (0, 1], e.g. 0.05")
        for name in ("alpha_range", "beta_range", "gamma_range"):
            low, high = getattr(self, name)
            if not 1.0 <= low <= high:
                raise ValueError(
                    f"{name}=({low}, {high}): need 1 <= low <= high (multipliers below 1 shrink the network as φ grows)"
                )
        if self.latency_repeats < 1:
            raise ValueError(f"latency_repeats={self.latency_repeats} must be at least 1")
        if self.family is not None:
            from workbench.models.families import check_family_name

            check_family_name(self.family)  # refused now, not after the trials
        self.budget.validate()
        self.proxy.validate()
        return self

    def differences(self, other: SearchConfig) -> list[str]:
        """Options (dotted) that differ from `other`, leaving out those a rerun may change."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return sorted(
            k for k in mine if k.split(".")[0] not in self.RESUMABLE_CHANGES and _norm(mine[k]) != _norm(theirs.get(k))
        )


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
