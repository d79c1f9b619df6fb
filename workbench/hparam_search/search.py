"""`run_search(config)`: search the fine-tuning recipe (or an augmentation policy) on the user's data.

One Optuna trial = one short `fine_tune` (the engine's own two-phase recipe, `recipe_mode` fixed with the
trial's options) of `variant` on a stratified subset of the data, ingested once for the whole search:

* the trial's phase-1 backbone features are shared: the first trial at a resolution computes them
  (`checkpoints/features.npz`), every later trial at that resolution without pixel augmentation links that
  file into its run and trains its head in seconds (the cache key of `phases._feature_cache_key` matches:
  same variant, weights, size, splits and seed);
* every `epoch` event is reported to the trial, so the pruner (median or Hyperband) stops a hopeless trial
  with a STOP file (the run ends cleanly at the next batch); multi-objective trials are never pruned, which
  Optuna does not support;
* the fixed recipe's point of the space is queued first (bayes and genetic), so the winner is always
  measured against it on the same images.

The study lives in `study.db` (SQLite) in the search directory, as the scaling search's does: rerunning there
continues it, and a trial left RUNNING by a killed process is marked failed and queued again. Outputs:
`results.csv`/`results.json`, `pareto.png`, `events.jsonl` (`trial` events, then `done`) and the winner's
recipe file. A winner within the noise of the runner-up is a tie (`chance.search_warning`): it is reported,
and no recipe is saved unless `save_anyway`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from workbench.engine.events import EVENTS_FILE, EventWriter, errors_as_events
from workbench.hparam_search import space as spaces
from workbench.hparam_search.config import HParamSearchConfig
from workbench.scaling_search.search import new_search_dir

STUDY_NAME = "search"
CONFIG_FILE = "search.json"
STUDY_FILE = "study.db"
PLOT_FILE = "pareto.png"
RECIPE_FILE = "best-recipe.yaml"
MIN_TRIAL_SECONDS = 30.0  # no trial starts with less of the budget left: it could not finish an epoch
COLUMNS = (
    "number",
    "status",
    "val_accuracy",
    "latency_ms",
    "trial_seconds",
    "epochs_run",
    "shared_features",
    "params",
    "reason",
)


@dataclasses.dataclass
class HParamSearchResult:
    search_dir: Path
    rows: list[dict]
    chosen: dict | None
    pareto: list[dict]
    recipe_path: Path | None
    table_csv: Path
    table_json: Path
    plot: Path
    seconds: float
    warning: str | None = None  # a tie (within the noise) or at chance: no recipe saved then


def run_search(config: HParamSearchConfig, *, listeners: Iterable[Callable[[dict], None]] = ()) -> HParamSearchResult:
    """Run (or continue) a search; see the module docstring. Raises ValueError on bad options or data."""
    config.validate()
    search_dir = Path(config.search_dir) if config.search_dir else new_search_dir(config.out)
    saved_path = search_dir / CONFIG_FILE
    resuming = saved_path.exists()
    if resuming:
        changed = HParamSearchConfig.load(saved_path).differences(config)
        if changed:
            raise ValueError(
                f"{search_dir} holds a search with other options ({', '.join(changed)}); rerun it with the "
                f"options in {saved_path}, or pick a new --search-dir"
            )
    search_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, search_dir=str(search_dir))
    config.save(saved_path)
    writer = EventWriter(search_dir / EVENTS_FILE, listeners)
    with errors_as_events(writer):
        return _Search(config, search_dir, writer, resuming).run()


class _Search:
    def __init__(self, config: HParamSearchConfig, search_dir: Path, writer: EventWriter, resuming: bool):
        self.config, self.dir, self.writer, self.resuming = config, search_dir, writer, resuming
        self.resolutions = config.resolution_list()
        self.dims = spaces.dims(config.space, self.resolutions)
        self.multi = len(config.objectives()) > 1
        self.latencies: dict[int, float] = {}

    # ------------------------------------------------------------------ set-up
    def run(self) -> HParamSearchResult:
        import optuna

        self.started = time.perf_counter()
        budget = self.config.budget_seconds()
        self.deadline = None if budget is None else self.started + budget
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.subset = self._data()
        self.study = self._study()
        self._recover_interrupted()
        if self._finished() < self.config.trials and self._seconds_left() > MIN_TRIAL_SECONDS:
            self.study.optimize(
                self._objective,
                n_trials=None,
                timeout=None if self.deadline is None else max(self.deadline - time.perf_counter(), 0.0),
                callbacks=[self._maybe_stop],
                gc_after_trial=True,
            )
        return self._finish(time.perf_counter() - self.started)

    def _seconds_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.perf_counter()

    def _data(self):
        """The stratified subset every trial trains on, ingested once (reloaded when continuing)."""
        from pipelines import Manifest, ingest
        from workbench.scaling_search.proxy import subset_manifest

        path = self.dir / "manifest.json"
        if self.resuming and path.exists():
            manifest = Manifest.load(path)
        else:
            manifest = ingest(self.config.data, workdir=self.dir, seed=self.config.seed)
        if manifest.multi_label:
            # The per-class subset and the trials' score (val accuracy, its seed noise) are single-label's.
            raise ValueError(
                f"{manifest.source} is multi-label data; `workbench search` ranks trials by single-label accuracy: "
                "search on a folder of class folders, or train multi-label data with `--recipe auto`"
            )
        c = self.config
        subset = subset_manifest(manifest, c.train_per_class, c.val_per_class, c.seed)
        sizes = subset.split_sizes()
        if sizes["train"] == 0 or sizes["val"] == 0:
            raise ValueError(
                f"{manifest.source} gives {sizes['train']} training and {sizes['val']} validation images; the "
                "search needs both: add images (a few per class at least)"
            )
        return subset

    def _study(self):
        import optuna

        c = self.config
        if c.strategy == "grid":
            sampler = optuna.samplers.GridSampler(spaces.grid(self.dims), seed=c.seed)
        elif c.strategy == "genetic":
            # Small generations: a search of a dozen trials must still evolve (Optuna's default is 50).
            sampler = optuna.samplers.NSGAIISampler(population_size=max(4, min(10, c.trials // 3)), seed=c.seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=min(4, c.trials), multivariate=True)
        pruner = optuna.pruners.NopPruner()
        if not self.multi and c.pruner == "median":
            # From the second epoch on: one epoch of a head at a high rate says little.
            pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
        elif not self.multi and c.pruner == "hyperband":
            pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=c.epochs + c.fine_tune_epochs)
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{(self.dir / STUDY_FILE).resolve()}")
        directions = ["maximize", "minimize"] if self.multi else ["maximize"]
        study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=self.storage,
            sampler=sampler,
            pruner=pruner,
            directions=directions,
            load_if_exists=True,
        )
        if not study.trials and c.strategy != "grid":
            study.enqueue_trial(self._baseline(), user_attrs={"baseline": True})
        return study

    def _baseline(self) -> dict:
        from workbench.models import get_variant

        spec = get_variant(self.config.variant)
        return spaces.baseline(self.config.space, self.resolutions, spec.resolution, spec.dropout)

    def _recover_interrupted(self) -> None:
        """Trials left RUNNING by a killed process: marked failed, their parameters queued again."""
        from workbench.scaling_search.search import requeue_interrupted

        requeue_interrupted(self.study, self.storage, STUDY_NAME, self.writer, "its parameters are queued again")

    # ------------------------------------------------------------------ trials
    def _finished(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def _maybe_stop(self, study, trial) -> None:
        if self._finished() >= self.config.trials or self._seconds_left() < MIN_TRIAL_SECONDS:
            study.stop()

    def _eta(self) -> float | None:
        from optuna.trial import TrialState

        seconds = [
            t.user_attrs["trial_seconds"]
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if "trial_seconds" in t.user_attrs
        ]
        if not seconds:
            return None
        eta = max(self.config.trials - len(seconds), 0) * sum(seconds) / len(seconds)
        return min(eta, max(self._seconds_left(), 0.0))

    def _objective(self, trial):
        import optuna

        from workbench.engine.config import RunConfig, with_overrides, with_recipe_defaults
        from workbench.engine.recipe import fine_tune

        c = self.config
        start = time.perf_counter()
        params = spaces.suggest(trial, self.dims)
        options = spaces.overrides(c.space, params, self.resolutions)
        trial.set_user_attr("options", options)
        event = {"number": trial.number, "params": options, "finished": self._finished(), "trials": c.trials}
        self.writer.emit("trial", status="start", eta_s=self._eta(), **event)
        trial_dir = self.dir / "trials" / f"{trial.number:04d}"
        size = int(options.get("image_size") or self.resolutions[0])
        shared = self._link_features(trial_dir, size)
        base = {
            "data": c.data,
            "variant": c.variant,
            "weights": c.weights,
            "batch_size": c.batch_size,
            "epochs": c.epochs,
            "fine_tune_epochs": c.fine_tune_epochs,
            "seed": c.seed,
            "run_dir": str(trial_dir),
            "recipe_mode": "fixed",
            "recipe.early_stopping_patience": 0,  # the proxy schedule is short: every trial runs all of it
        }
        left = self._seconds_left()
        if left != float("inf"):
            base["time_budget"] = f"{max(left, 1.0):.0f}s"  # the last trial is cut at an epoch boundary
        run_config = with_recipe_defaults(with_overrides(RunConfig(), {**base, **options}))
        reporter = _EpochReporter(trial, trial_dir, c.epochs, prune=not self.multi)
        result = fine_tune(run_config, listeners=[reporter], tensorboard=False, manifest=self.subset)
        self._keep_features(trial_dir, size)
        accuracy = result.best_val_accuracy
        attrs = {
            "val_accuracy": accuracy,
            "trial_seconds": round(time.perf_counter() - start, 2),
            "epochs_run": reporter.epochs,
            "shared_features": shared,
            "run_dir": str(trial_dir),
        }
        latency = None
        if self.multi:
            latency = self._latency(size)
            attrs["latency_ms"] = latency
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if reporter.pruned:
            reason = f"pruned after {reporter.epochs} epochs: {reporter.last:.3f} is below the median of earlier trials"
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("reason", reason)
            self.writer.emit("trial", status="pruned", reason=reason, eta_s=self._eta(), **event, **attrs)
            raise optuna.TrialPruned(reason)
        if accuracy is None:
            trial.set_user_attr("status", "failed")
            raise ValueError(f"trial {trial.number} ({trial_dir}) finished no epoch; see its events.jsonl")
        trial.set_user_attr("status", "trained")
        self.writer.emit("trial", status="trained", eta_s=self._eta(), **event, **attrs)
        return (accuracy, latency) if self.multi else accuracy

    def _features_path(self, size: int) -> Path:
        return self.dir / "features" / f"{self.config.variant}-{size}px.npz"

    def _link_features(self, trial_dir: Path, size: int) -> bool:
        """Give the trial the shared phase-1 features of its resolution, when a trial already computed them."""
        from workbench.engine.phases import FEATURES_FILE
        from workbench.engine.rundir import CHECKPOINTS_DIR

        source = self._features_path(size)
        if not source.exists():
            return False
        target = trial_dir / CHECKPOINTS_DIR / FEATURES_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, target)
        return True

    def _keep_features(self, trial_dir: Path, size: int) -> None:
        """The first trial at a resolution that computed the features leaves them for the others."""
        from workbench.engine.phases import FEATURES_FILE
        from workbench.engine.rundir import CHECKPOINTS_DIR

        made, shared = trial_dir / CHECKPOINTS_DIR / FEATURES_FILE, self._features_path(size)
        if made.exists() and not shared.exists():
            shared.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(made, shared)

    def _latency(self, size: int) -> float:
        """Milliseconds per image of the variant at `size` (inference in batches, this machine), once per size."""
        if size not in self.latencies:
            from workbench.engine.speed import measure_speed

            speed = measure_speed(self.config.variant, size, self.config.batch_size)
            self.latencies[size] = round(1000.0 / speed.forward_images_per_s, 3)
        return self.latencies[size]

    # ------------------------------------------------------------------ results
    def rows(self) -> list[dict]:
        from optuna.trial import TrialState

        rows = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            a = t.user_attrs
            rows.append(
                {
                    "number": t.number,
                    "status": a.get("status", "pruned" if t.state == TrialState.PRUNED else "trained"),
                    "baseline": bool(a.get("baseline")),
                    "val_accuracy": a.get("val_accuracy"),
                    "latency_ms": a.get("latency_ms"),
                    "trial_seconds": a.get("trial_seconds"),
                    "epochs_run": a.get("epochs_run"),
                    "shared_features": a.get("shared_features"),
                    "options": a.get("options", {}),
                    "params": " ".join(f"{k}={v}" for k, v in a.get("options", {}).items()),
                    "run_dir": a.get("run_dir"),
                    "reason": a.get("reason", ""),
                }
            )
        return rows

    def _finish(self, seconds: float) -> HParamSearchResult:
        from workbench.scaling_search.report import pareto_front, plot_pareto, write_table

        c = self.config
        rows = self.rows()
        trained = [r for r in rows if r["status"] == "trained" and r["val_accuracy"] is not None]
        metric = "latency_ms" if self.multi else "trial_seconds"
        pareto = pareto_front(trained, metric)
        chosen = pick_winner(trained, metric, sum(self.subset.class_counts("val").values()))
        warning = self._warning(trained)
        baseline = next((r for r in trained if r["baseline"]), None)
        recipe_path = None
        if chosen is not None and (warning is None or c.save_anyway):
            from workbench.hparam_search.recipe_file import save_recipe

            recipe_path = save_recipe(
                Path(c.recipe_out) if c.recipe_out else self.dir / RECIPE_FILE,
                chosen["options"],
                {
                    "search_dir": str(self.dir),
                    "space": c.space,
                    "strategy": c.strategy,
                    "objective": c.objective,
                    "trial": chosen["number"],
                    "val_accuracy": chosen["val_accuracy"],
                    "baseline_val_accuracy": baseline["val_accuracy"] if baseline else None,
                    "val_images": sum(self.subset.class_counts("val").values()),
                    "variant": c.variant,
                    "proxy_schedule": f"{c.epochs} head + {c.fine_tune_epochs} fine-tune epochs on "
                    f"{c.train_per_class} images per class",
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **({"warning": warning} if warning else {}),
                },
            )
        extra = {
            "search_dir": str(self.dir),
            "space": c.space,
            "strategy": c.strategy,
            "objective": c.objective,
            "subset": self.subset.split_sizes(),
            "classes": self.subset.classes,
            "chosen": chosen,
            "baseline": baseline,
            "pareto_metric": metric,
            "pareto_front": [r["number"] for r in pareto],
            "recipe_path": str(recipe_path) if recipe_path else None,
            "search_seconds": round(seconds, 1),
            "warning": warning,
        }
        table_csv, table_json = write_table(rows, self.dir, extra, columns=COLUMNS)
        plot = plot_pareto(
            trained,
            metric,
            self.dir / PLOT_FILE,
            chosen,
            f"search ({c.space}, {c.strategy}): {len(trained)} trained of {len(rows)} trials",
            label=lambda r: f"#{r['number']}",
            xlabel="latency per image (ms)" if self.multi else "trial time (s)",
        )
        if chosen is None:
            raise ValueError(
                f"no trial finished training in {seconds:.0f} s ({len(rows)} pruned or cut): raise --time-budget "
                "or --trials, or lower --epochs / --train-per-class"
            )
        self.writer.done(
            run_dir=self.dir,
            best_val_accuracy=chosen["val_accuracy"],
            model_path=None,
            chosen=chosen,
            recipe_path=str(recipe_path) if recipe_path else None,
            seconds=seconds,
            **({"warning": warning} if warning else {}),
        )
        return HParamSearchResult(
            self.dir, rows, chosen, pareto, recipe_path, table_csv, table_json, plot, seconds, warning
        )

    def _warning(self, trained: list[dict]) -> str | None:
        """A tie or a result at chance (`chance.search_warning`, on the same validation images)."""
        from workbench.engine.chance import search_warning

        return search_warning(
            [r["val_accuracy"] for r in trained],
            list(self.subset.class_counts("val").values()),
            fix="raise --val-per-class and --train-per-class (more images per class) or --epochs/--fine-tune-epochs",
        )


def pick_winner(trained: list[dict], metric: str, val_images: int) -> dict | None:
    """The trial to save: the best validation accuracy (the cheaper by `metric` on a tie), except that the
    baseline (the fixed recipe, trial 0) is kept when the best is not ahead of it by more than the noise of the
    difference on `val_images` images. A tie-break among lucky draws once chose a 96 px recipe that lost 11 points
    to `auto` on Fashion-MNIST; the known recipe is the safer pick when nothing beats it clearly."""
    from workbench.engine.chance import difference_noise

    best = max(trained, key=lambda r: (r["val_accuracy"], -(r[metric] or 0)), default=None)
    baseline = next((r for r in trained if r.get("baseline")), None)
    if best is None or baseline is None or best is baseline or val_images <= 0:
        return best
    if best["val_accuracy"] - baseline["val_accuracy"] <= difference_noise(best["val_accuracy"], val_images):
        return baseline
    return best


class _EpochReporter:
    """Events listener of one trial: every epoch's validation accuracy goes to Optuna (step = the epoch counted
    over both phases); when the pruner says so, a STOP file ends the run at the next batch."""

    def __init__(self, trial, run_dir: Path, phase1_epochs: int, *, prune: bool):
        self.trial, self.run_dir, self.phase1_epochs, self.prune = trial, run_dir, phase1_epochs, prune
        self.epochs, self.pruned, self.last = 0, False, 0.0

    def __call__(self, event: dict) -> None:
        if event.get("type") != "epoch" or event.get("val_accuracy") is None:
            return
        step = event["epoch"] + (self.phase1_epochs if event.get("phase") == 2 else 0)
        self.epochs, self.last = step, float(event["val_accuracy"])
        if not self.prune or self.pruned:
            return
        self.trial.report(self.last, step)
        if self.trial.should_prune():
            from workbench.engine.rundir import request_stop

            self.pruned = True
            request_stop(self.run_dir)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no copy of the arrays), or a copy where the file system has none."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
