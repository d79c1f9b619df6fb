"""`run_search(config)`: step 1 of the EfficientNet paper on the user's data, through Optuna.

Each Optuna trial is one candidate (α, β, γ) at φ = 1 of the proxy base network:

1. γ completes the sampler's (α, β) so that α·β²·γ² ≈ 2; outside the tolerance: skipped;
2. the candidate is built (random init) and measured: FLOPs, parameters, latency at batch 1;
   over the budget: skipped, never trained;
3. otherwise it trains on the proxy (`proxy.train_candidate`) and its validation accuracy is
   the trial's value.

Skipped candidates end as PRUNED trials with the reason in their user attributes. The study
lives in `study.db` (SQLite) in the search directory: rerunning the search there continues it.
Finished trials are never trained again; a trial that was running when the process died is
marked failed and its candidate is queued again first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workbench.engine.events import EVENTS_FILE, EventWriter, errors_as_events
from workbench.scaling_search.candidates import Candidate, complete, constraint_error, feasible_grid, grid_values
from workbench.scaling_search.config import SearchConfig

STUDY_NAME = "scale-search"
CONFIG_FILE = "search.json"
STUDY_FILE = "study.db"
PLOT_FILE = "pareto.png"
SEARCH_PHI = 1.0  # step 1 of the paper: fix φ = 1 and search α, β, γ


@dataclasses.dataclass
class SearchResult:
    search_dir: Path
    rows: list[dict]
    chosen: dict | None
    family: Any  # ScalingFamily or None when no candidate trained
    family_path: Path | None
    table_csv: Path
    table_json: Path
    plot: Path
    seconds: float
    warning: str | None = None  # the winner is at chance or within noise of the runner-up (no family saved then)


def new_search_dir(out: str | Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"search-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def prepare_dir(config: SearchConfig) -> tuple[SearchConfig, Path, bool]:
    """The search directory and the config to run: a saved one must agree with the new one."""
    search_dir = Path(config.search_dir) if config.search_dir else new_search_dir(config.out)
    saved_path = search_dir / CONFIG_FILE
    resuming = saved_path.exists()
    if resuming:
        saved = SearchConfig.load(saved_path)
        changed = saved.differences(config)
        if changed:
            raise ValueError(
                f"{search_dir} holds a search with other options ({', '.join(changed)}); rerun it with the "
                f"options in {saved_path}, or pick a new --search-dir"
            )
    search_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, search_dir=str(search_dir))
    config.save(saved_path)
    return config, search_dir, resuming


def run_search(config: SearchConfig, *, listeners: Iterable[Callable[[dict], None]] = ()) -> SearchResult:
    """Run (or continue) a search; see the module docstring. Raises ValueError on bad options/data."""
    config.validate()
    config, search_dir, resuming = prepare_dir(config)
    writer = EventWriter(search_dir / EVENTS_FILE, listeners)
    with errors_as_events(writer):
        return _Search(config, search_dir, writer, resuming).run()


class _Search:
    def __init__(self, config: SearchConfig, search_dir: Path, writer: EventWriter, resuming: bool):
        self.config, self.dir, self.writer, self.resuming = config, search_dir, writer, resuming

    # ------------------------------------------------------------------ set-up
    def run(self) -> SearchResult:
        import optuna

        started = time.perf_counter()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.manifest = self._data()
        p = self.config.proxy
        from workbench.models.scaling import ScalingFamily

        self.base_family = ScalingFamily(
            "proxy", base_width=p.base_width, base_depth=p.base_depth, base_resolution=p.base_resolution
        )
        self.subset = _subset(self.manifest, self.config)
        self.base_cost = self._base_cost()
        self.limits = self.config.budget.limits(self.base_cost.as_dict())
        self.study = self._study()
        self._recover_interrupted()
        if self._count("trained") < self.config.trials:
            self.study.optimize(self._objective, n_trials=None, callbacks=[self._maybe_stop], gc_after_trial=True)
        return self._finish(time.perf_counter() - started)

    def _data(self):
        from pipelines import Manifest, ingest

        path = self.dir / "manifest.json"
        if self.resuming and path.exists():
            manifest = Manifest.load(path)  # the same files and splits as the first run
        else:
            manifest = ingest(self.config.data, workdir=self.dir, seed=self.config.seed)
        if manifest.multi_label:
            raise ValueError(
                f"{manifest.source} is multi-label data; the scaling search ranks candidates by single-label "
                "accuracy: search on a folder of class folders"
            )
        sizes = manifest.split_sizes()
        if sizes["train"] == 0 or sizes["val"] == 0:
            raise ValueError(
                f"{manifest.source} gives {sizes['train']} training and {sizes['val']} validation "
                "images; the search needs both: add images (a few per class at least)"
            )
        return manifest

    def _base_cost(self):
        import keras

        from workbench.models.variants import custom_variant
        from workbench.scaling_search.cost import build, measure

        spec = custom_variant(0.0, self.base_family)
        model = build(spec, self.manifest.num_classes)
        cost = measure(model, spec, self.config.latency_repeats)
        del model
        keras.backend.clear_session()
        return cost

    def _study(self):
        import optuna

        c = self.config
        self.alphas = grid_values(*c.alpha_range, c.step)
        self.betas = grid_values(*c.beta_range, c.step)
        self.space = feasible_grid(
            self.alphas, self.betas, step=c.step, gamma_range=c.gamma_range, tolerance=c.tolerance
        )
        if c.strategy == "grid":
            if not self.space:
                raise ValueError(
                    f"no (α, β, γ) on the {c.step:g} grid of α {c.alpha_range}, β {c.beta_range}, "
                    f"γ {c.gamma_range} has α·β²·γ² within {c.tolerance:.0%} of 2: widen the ranges, "
                    "refine --step or raise --tolerance"
                )
            # The grid is the feasible set itself (one categorical choice per candidate), so no grid
            # trial is spent on a candidate that breaks the constraint.
            sampler = optuna.samplers.GridSampler({"candidate": [_label(x) for x in self.space]}, seed=c.seed)
        elif c.strategy == "genetic":
            # α and β are genes; γ completes them as for bayes. Small generations, so a few trials still evolve.
            sampler = optuna.samplers.NSGAIISampler(population_size=max(4, min(10, c.trials // 2)), seed=c.seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=min(5, c.trials))
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{(self.dir / STUDY_FILE).resolve()}")
        return optuna.create_study(
            study_name=STUDY_NAME, storage=self.storage, sampler=sampler, direction="maximize", load_if_exists=True
        )

    def _recover_interrupted(self) -> None:
        """Trials left RUNNING by a killed process: mark them failed, queue their candidates again."""
        requeue_interrupted(self.study, self.storage, STUDY_NAME, self.writer, "its candidate is queued again")

    # ------------------------------------------------------------------ trials
    def _count(self, status: str) -> int:
        from optuna.trial import TrialState

        return sum(
            1
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.user_attrs.get("status") == status
        )

    def _eta(self) -> float | None:
        from optuna.trial import TrialState

        seconds = [
            t.user_attrs["trial_seconds"]
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("status") == "trained"
        ]
        if not seconds:
            return None
        return max(self.config.trials - len(seconds), 0) * sum(seconds) / len(seconds)

    def _maybe_stop(self, study, trial) -> None:
        if self._count("trained") >= self.config.trials or len(study.trials) >= self.config.max_candidates:
            study.stop()

    def _objective(self, trial) -> float:
        import optuna

        c = self.config
        if c.strategy == "grid":
            alpha, beta, gamma = _parse_label(trial.suggest_categorical("candidate", [_label(x) for x in self.space]))
            cand = Candidate(alpha, beta, gamma)
        else:
            # TPE proposes α and β; γ is completed to hold the constraint as well as the grid allows.
            alpha = trial.suggest_float("alpha", c.alpha_range[0], c.alpha_range[1], step=c.step)
            beta = trial.suggest_float("beta", c.beta_range[0], c.beta_range[1], step=c.step)
            cand = complete(round(alpha, 6), round(beta, 6), step=c.step, gamma_range=c.gamma_range)
        for key, value in cand.as_dict().items():
            trial.set_user_attr(key, value)
        event = {"number": trial.number, **cand.as_dict(), "trained": self._count("trained"), "trials": c.trials}
        self.writer.emit("trial", status="start", eta_s=self._eta(), **event)

        def skip(status: str, reason: str, **attrs):
            for key, value in {"status": status, "reason": reason, **attrs}.items():
                trial.set_user_attr(key, value)
            self.writer.emit("trial", status=status, reason=reason, eta_s=self._eta(), **event, **attrs)
            raise optuna.TrialPruned(reason)

        error = constraint_error(cand)
        if error > c.tolerance:
            skip(
                "skipped",
                f"constraint: α·β²·γ² = {cand.product:.3f} is {error:.1%} from 2 "
                f"(tolerance {c.tolerance:.0%}; no γ in {c.gamma_range} on the {c.step:g} grid fits)",
            )
        duplicate = self._trained_twin(cand)
        if duplicate is not None:
            skip(
                "duplicate",
                f"same candidate as trial {duplicate.number}, already trained",
                **{k: duplicate.user_attrs.get(k) for k in ("val_accuracy", "flops", "params")},
            )
        return self._train(trial, cand, event, skip)

    def _trained_twin(self, cand):
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("status") == "trained" and _coefficients(t.user_attrs) == (
                cand.alpha,
                cand.beta,
                cand.gamma,
            ):
                return t
        return None

    def _same_network(self, cost: dict):
        """A trained trial whose built model has the same resolution, parameters and MACs."""
        from optuna.trial import TrialState

        key = (cost["resolution"], cost["params"], cost["macs"])
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            a = t.user_attrs
            if a.get("status") == "trained" and (a.get("resolution"), a.get("params"), a.get("macs")) == key:
                return t
        return None

    def _train(self, trial, cand, event: dict, skip) -> float:
        import keras

        from workbench.models.variants import custom_variant
        from workbench.scaling_search.cost import build, measure
        from workbench.scaling_search.proxy import train_candidate

        start = time.perf_counter()
        family = dataclasses.replace(self.base_family, alpha=cand.alpha, beta=cand.beta, gamma=cand.gamma)
        spec = custom_variant(SEARCH_PHI, family)
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.config.seed)  # every candidate starts from the same seed
        model = build(spec, self.manifest.num_classes)
        cost = measure(model, spec, self.config.latency_repeats).as_dict()
        # Measured growth over the base: rounding of channels, repeats and pixels moves it off α·β²·γ².
        cost["flops_ratio"] = round(cost["flops"] / self.base_cost.flops, 4)
        for key, value in cost.items():
            trial.set_user_attr(key, value)
        over = [
            f"{metric} {cost[metric]:.4g} > {limit:.4g}"
            for metric, limit in self.limits.items()
            if cost[metric] > limit
        ]
        if over:
            del model
            skip("skipped", "over budget: " + ", ".join(over), **cost)
        twin = self._same_network(cost)
        if twin is not None:
            # Small bases round channels, repeats and pixels coarsely: other coefficients, same network.
            del model
            skip(
                "duplicate",
                f"same network as trial {twin.number} (α={twin.user_attrs['alpha']:g}, "
                f"β={twin.user_attrs['beta']:g}, γ={twin.user_attrs['gamma']:g} round to the same "
                "channels, repeats and resolution), already trained",
                **cost,
                val_accuracy=twin.user_attrs.get("val_accuracy"),
            )
        trial_dir = self.dir / "trials" / f"{trial.number:04d}"
        writer = EventWriter(trial_dir / EVENTS_FILE)
        self.writer.emit("trial", status="training", trial_dir=str(trial_dir), eta_s=self._eta(), **event, **cost)
        result = train_candidate(model, self.subset, self.config.proxy, spec.resolution, writer, self.config.seed)
        del model
        attrs = {**result, "status": "trained", "reason": "", "trial_seconds": time.perf_counter() - start}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        done = {**event, "trained": event["trained"] + 1}
        self.writer.emit(
            "trial",
            status="trained",
            **done,
            **cost,
            **result,
            trial_seconds=attrs["trial_seconds"],
            eta_s=self._eta_after(attrs["trial_seconds"], done["trained"]),
        )
        return result["val_accuracy"]

    def _eta_after(self, seconds: float, trained: int) -> float:
        """ETA once this trial's time is known (the study does not hold it until the trial returns)."""
        from optuna.trial import TrialState

        times = [
            t.user_attrs["trial_seconds"]
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("status") == "trained"
        ] + [seconds]
        return max(self.config.trials - trained, 0) * sum(times) / len(times)

    # ------------------------------------------------------------------ results
    def rows(self) -> list[dict]:
        from optuna.trial import TrialState

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or "status" not in t.user_attrs:
                continue  # failed (interrupted) trials were queued again; running ones are elsewhere
            a = t.user_attrs
            rows.append(
                {
                    "number": t.number,
                    "status": a["status"],
                    "alpha": a.get("alpha"),
                    "beta": a.get("beta"),
                    "gamma": a.get("gamma"),
                    "product": a.get("product"),
                    "width": a.get("width"),
                    "depth": a.get("depth"),
                    "resolution": a.get("resolution"),
                    "flops": a.get("flops"),
                    "flops_ratio": a.get("flops_ratio"),
                    "macs": a.get("macs"),
                    "params": a.get("params"),
                    "latency_ms": a.get("latency_ms"),
                    "val_accuracy": a.get("val_accuracy"),
                    "last_val_accuracy": a.get("last_val_accuracy"),
                    "train_seconds": a.get("train_seconds"),
                    "reason": a.get("reason", ""),
                }
            )
        return rows

    def _finish(self, seconds: float) -> SearchResult:
        from workbench.models import families
        from workbench.models.scaling import ScalingFamily
        from workbench.scaling_search.report import choose, pareto_front, plot_pareto, write_table

        c = self.config
        rows = self.rows()
        chosen = choose(rows)
        metric = c.budget.primary_metric()
        family = family_path = None
        warning = self._warning(rows)
        if chosen is not None and (warning is None or c.save_anyway):
            name = c.family or f"search-{self.dir.name.removeprefix('search-')}".lower()
            # The saved family grows B0 (the paper's step 2) with the coefficients found on the proxy.
            family = ScalingFamily(name=name, alpha=chosen["alpha"], beta=chosen["beta"], gamma=chosen["gamma"])
            family_path = families.save_family(family, c.families_dir)
        extra = {
            "search_dir": str(self.dir),
            "strategy": c.strategy,
            "phi": SEARCH_PHI,
            "candidates_in_space": len(self.space),
            "budget": dataclasses.asdict(c.budget),
            "limits": self.limits,
            "base": {
                "width": self.base_family.base_width,
                "depth": self.base_family.base_depth,
                "resolution": self.base_family.base_resolution,
                **self.base_cost.as_dict(),
            },
            "proxy": dataclasses.asdict(c.proxy),
            "subset": self.subset.split_sizes(),
            "classes": self.manifest.classes,
            "chosen": chosen,
            "pareto_metric": metric,
            "pareto_front": [r["number"] for r in pareto_front(rows, metric)],
            "family": dataclasses.asdict(family) if family else None,
            "family_path": str(family_path) if family_path else None,
            "warning": warning,
        }
        table_csv, table_json = write_table(rows, self.dir, extra)
        trained = sum(r["status"] == "trained" for r in rows)
        plot = plot_pareto(
            rows,
            metric,
            self.dir / PLOT_FILE,
            chosen,
            f"scale search: {trained} trained candidates at φ = 1 of the proxy",
        )
        if chosen is None:
            raise ValueError(
                f"no candidate was trained: all {len(rows)} proposed were outside the constraint or the budget "
                f"(limits {self.limits}; base network {self.base_cost.as_dict()}). Loosen --max-flops/--max-params/"
                "--max-latency-ms, widen --tolerance, or raise --max-candidates"
            )
        self.writer.done(
            run_dir=self.dir,
            best_val_accuracy=chosen["val_accuracy"],
            model_path=None,
            family=family.name if family else None,
            family_path=str(family_path) if family_path else None,
            chosen=chosen,
            seconds=seconds,
            **({"warning": warning} if warning else {}),
        )
        return SearchResult(
            self.dir, rows, chosen, family, family_path, table_csv, table_json, plot, seconds, warning=warning
        )

    def _warning(self, rows: list[dict]) -> str | None:
        """Issue 12: why the winner means nothing (at chance, or within the noise of the runner-up), or None."""
        from workbench.engine.chance import search_warning

        accuracies = [r["val_accuracy"] for r in rows if r["status"] == "trained" and r["val_accuracy"] is not None]
        return search_warning(accuracies, list(self.subset.class_counts("val").values()))


def _subset(manifest, config: SearchConfig):
    from workbench.scaling_search.proxy import subset_manifest

    p = config.proxy
    return subset_manifest(manifest, p.train_per_class, p.val_per_class, config.seed)


def _label(c) -> str:
    return f"{c.alpha:g},{c.beta:g},{c.gamma:g}"


def _parse_label(label: str) -> tuple[float, float, float]:
    alpha, beta, gamma = (float(v) for v in label.split(","))
    return alpha, beta, gamma


def _coefficients(attrs: dict) -> tuple:
    return attrs.get("alpha"), attrs.get("beta"), attrs.get("gamma")


def requeue_interrupted(study, storage, study_name: str, writer, queued: str) -> None:
    """Trials of `study` left RUNNING by a killed process: marked failed, their parameters queued again, and an
    `interrupted` trial event each (`queued` ends its message). Shared by the scaling and hyperparameter searches."""
    import optuna
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return
    # `tell` runs the sampler's after_trial hook, and GridSampler's calls `study.stop()`, which raises
    # outside `optimize`, when the grid looks used up. A study opened with a hook-less sampler records
    # the failure alone.
    recorder = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    for trial in running:
        recorder.tell(trial.number, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(dict(trial.params))
        writer.emit(
            "trial",
            status="interrupted",
            number=trial.number,
            params=dict(trial.params),
            message=f"the process stopped during this trial; {queued}",
        )
