"""Typed options of a scaling search (no TensorFlow here: the CLI reads them cheaply).

`SearchConfig` is saved as `search.json` in the search directory; rerunning a search in the
same directory continues it, and refuses options that would change what finished trials mean.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("grid", "bayes")
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

    flops: FLOPs per image as `workbench variants` reports them (2 x multiply-adds), absolute
        ('150M') or a multiple of the proxy base network at φ = 0 ('2.2x').
    params: parameter count, absolute ('1.5M') or a multiple of the base ('3x').
    latency_ms: milliseconds per image at batch 1 on this machine, timed on the built model.
    """

    flops: str | None = None
    params: str | None = None
    latency_ms: float | None = None

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

    base_width: float = 0.5
    base_depth: float = 0.5
    base_resolution: int = 64
    train_per_class: int = 100  # stratified subset of the train split, per class
    val_per_class: int = 50  # of the validation split, per class (all candidates score on the same images)
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 5e-3  # from random init: higher than the fine-tuning recipe's 1e-3
    weight_decay: float = 0.004
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.1
    augment: str = "none"
    # Keras's BatchNormalization momentum of 0.99 needs hundreds of steps before the moving statistics
    # that validation uses reflect the data; after a short from-scratch schedule every candidate would
    # score at chance. 0.9 settles within a few dozen steps.
    bn_momentum: float = 0.9
    # graph: trace fit once (seconds of tracing, then fast steps); eager: no tracing, slow steps.
    # auto: eager when the whole schedule is at most EAGER_MAX_STEPS steps (a tiny proxy).
    execution: str = "auto"

    def validate(self) -> ProxyConfig:
        for name in ("base_width", "base_depth", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"proxy {name}={getattr(self, name)} must be greater than 0")
        for name in ("base_resolution", "train_per_class", "val_per_class", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"proxy {name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"proxy bn_momentum={self.bn_momentum} must be in [0, 1), e.g. 0.9")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"proxy execution={self.execution!r} is not one of {', '.join(EXECUTIONS)}")
        if self.base_resolution < 16:
            raise ValueError(
                f"proxy base_resolution={self.base_resolution} px is too small: use 16 or more "
                "(the network downsamples 32x)"
            )
        return self


@dataclass
class SearchConfig:
    """One scaling search. `trials` counts trained candidates; candidates outside the constraint or
    the budget are recorded as skipped and do not count (they cost a model build at most)."""

    data: str | None = None  # folder, .zip or tfds:NAME; None = the embedded sample
    strategy: str = "grid"  # grid (Optuna GridSampler) or bayes (Optuna TPESampler)
    trials: int = 8
    max_candidates: int = 200  # trials proposed in all, skipped ones included (ends a search whose budget rejects most)
    tolerance: float = 0.05  # |α·β²·γ² / 2 − 1| allowed
    step: float = 0.05  # grid spacing of α, β, γ
    alpha_range: tuple[float, float] = (1.0, 2.0)
    beta_range: tuple[float, float] = (1.0, 1.5)
    gamma_range: tuple[float, float] = (1.0, 1.5)
    budget: Budget = field(default_factory=Budget)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    family: str | None = None  # name of the saved family; None = "search-<id>"
    families_dir: str | None = None  # None = $WORKBENCH_FAMILIES or ~/.workbench/families
    seed: int = 0
    latency_repeats: int = 20
    out: str = "runs"
    search_dir: str | None = None  # explicit directory; None = <out>/search-<timestamp>

    # Options that may change between the runs of one search (the rest must not).
    RESUMABLE_CHANGES = ("trials", "max_candidates", "family", "families_dir", "out", "search_dir")

    def validate(self) -> SearchConfig:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}")
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown search option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        values["budget"] = Budget(**values.get("budget", {}))
        values["proxy"] = ProxyConfig(**values.get("proxy", {}))
        for name in ("alpha_range", "beta_range", "gamma_range"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def save(self, path: Path) -> None:
        from workbench.engine.rundir import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

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
