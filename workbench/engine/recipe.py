"""`fine_tune(config)`: the two-phase transfer-learning recipe, resumable, under a precision
policy and a distribution strategy.

The whole recipe, in the order it runs:

1. ingest the data (every file checked once, stratified splits) into the run directory;
2. build the variant with ImageNet weights and a fresh head for the dataset's classes;
3. **phase 1**: backbone frozen, head only. Without pixel augmentation the backbone's pooled
   features are computed once and the head trains on them (epochs cost milliseconds);
4. **phase 2**: the best phase-1 weights, the top `unfreeze_blocks` blocks unfrozen (whole
   blocks; BatchNorm stays frozen, in inference mode), a 10x lower learning rate;
5. the best epoch of either phase (by validation accuracy) becomes `model.keras`.

Both phases use AdamW with linear warmup then cosine decay, label-smoothed cross-entropy,
class weights when the classes are imbalanced, early stopping, and a checkpoint after every
epoch so `resume(run_dir)` continues a killed run.

Steps 3 and 4 are data (`recipe_phases`, a list of `Phase`); a run is a context
(`workbench.engine.context`) that `fit_phase` trains phase after phase (`workbench.engine.phases`).
Listeners see every event as it is written; extra Keras callbacks join every phase's `fit`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench.engine.config import RunConfig
from workbench.engine.context import (
    IMBALANCE_RATIO,
    RunContext,
    build_context,
    class_weights,
    fixed_size_model,
    open_run,
    replan_fine_tune,
)
from workbench.engine.events import EVENTS_FILE, EventWriter, Listener, errors_as_events
from workbench.engine.phases import Phase, TrainingError, fit_phase, restore_drop_rates
from workbench.engine.rundir import CHECKPOINTS_DIR, CONFIG_FILE, MODEL_FILE, pid_file
from workbench.engine.strategy import strategy_label

# Defined with the pieces they belong to, importable from here as before.
__all__ = [
    "IMBALANCE_RATIO",
    "Phase",
    "RunResult",
    "TrainingError",
    "class_weights",
    "fine_tune",
    "recipe_phases",
    "resume",
]


@dataclasses.dataclass
class RunResult:
    """What `fine_tune` returns; everything is also on disk in `run_dir`."""

    run_dir: Path
    best_val_accuracy: float | None
    model_path: Path | None
    stopped: bool = False  # a STOP file ended the run early
    best_phase: int | None = None
    best_epoch: int | None = None
    precision: str = "float32"
    strategy: str = "default"
    replicas: int = 1
    global_batch_size: int = 0
    cached_features: bool = False
    seconds: float = 0.0
    chief: bool = True  # False on the other workers of a multi-worker run
    terminated: bool = False  # SIGTERM stopped the run (like STOP); the caller should exit, not go on
    warning: str | None = None  # the best val accuracy is not clearly above chance: why, and what to raise


def fine_tune(
    config: RunConfig | dict | None = None,
    *,
    listeners: Iterable[Listener] = (),
    callbacks: Iterable[Any] = (),
    tensorboard: bool = True,
    manifest: Any = None,
) -> RunResult:
    """Train a new run. `config` is a RunConfig or a dict for `RunConfig.from_dict`.

    `listeners` receive every event as it is written (the CLI's progress bar is one; see
    `workbench.engine.events.Listener`). `callbacks` are Keras callbacks appended to every phase's
    `fit` (on cached features, phase 1 fits the head alone: `self.model` is that head model).
    `tensorboard`: also write the events as TensorBoard scalars under `run_dir/tb/`
    (`workbench.engine.tensorboard`).
    `manifest`: train on this already ingested `pipelines.Manifest` (a search's trials share one subset of the
    data, ingested once) instead of ingesting `config.data`; it is saved into the run like an ingested one.
    Raises `ValueError` (bad config or data; `pipelines.DataError` is one) or `TrainingError`;
    either is also written to `events.jsonl` as an `error` event once the run directory exists.
    """
    if config is None:
        config = RunConfig()
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    config.validate()
    if isinstance(config.data, str):
        from pipelines.sources import check_local_source

        check_local_source(config.data)  # a typo is refused before a run directory is made
    return _run(config, listeners=listeners, callbacks=callbacks, tensorboard=tensorboard, manifest=manifest)


def resume(
    run_dir: str | Path,
    *,
    listeners: Iterable[Listener] = (),
    callbacks: Iterable[Any] = (),
    tensorboard: bool = True,
) -> RunResult:
    """Continue a run from its last completed epoch (weights, optimizer state and phase)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        if (run_dir / CHECKPOINTS_DIR).is_dir():  # create_run_dir made it: a run that never got its config
            raise ValueError(
                f"{run_dir} was stopped before its data was ingested, so there is nothing to resume; start it "
                f"again with `workbench train DATA --run-dir {run_dir}`"
            )
        raise ValueError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); give runs/<run-id>")
    config = RunConfig.load(run_dir / CONFIG_FILE).validate()
    return _run(config, listeners=listeners, callbacks=callbacks, tensorboard=tensorboard, resume_dir=run_dir)


def recipe_phases(config: RunConfig) -> list[Phase]:
    """The recipe as data: the head on a frozen backbone, then the top blocks at a lower rate; or, from
    scratch, one phase in which every layer trains."""
    if config.from_scratch:
        return [
            Phase(
                1,
                "from scratch (every layer trains)",
                epochs=config.epochs,
                learning_rate=config.recipe.learning_rate,
                scratch=True,
                progressive=config.progressive,
            )
        ]
    mode = config.recipe.cache_features
    phases = [
        Phase(
            1,
            "head (backbone frozen)",
            epochs=config.epochs,
            learning_rate=config.recipe.learning_rate,
            features=mode == "on" or (mode == "auto" and config.augment == "none"),
        )
    ]
    if config.fine_tune_epochs > 0:
        phases.append(
            Phase(
                2,
                "fine-tune (top blocks unfrozen)",
                epochs=config.fine_tune_epochs,
                learning_rate=config.recipe.fine_tune_learning_rate,
                unfreeze_blocks=config.recipe.unfreeze_blocks,
                from_best=True,
                progressive=config.progressive,
            )
        )
    return phases


def _run(
    config: RunConfig, *, listeners, callbacks, tensorboard: bool, resume_dir: Path | None = None, manifest: Any = None
) -> RunResult:
    """build the context -> fit each phase -> save the best model."""
    import keras

    from workbench.engine.callbacks import stop_on_sigterm
    from workbench.engine.precision import precision_policy
    from workbench.engine.strategy import is_chief, resolve_strategy

    started = time.perf_counter()
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF ops run.
    strategy = resolve_strategy(config.strategy)
    chief = is_chief(strategy)
    with open_run(config, chief=chief, resume_dir=resume_dir) as run_dir:
        writer = EventWriter(
            run_dir / EVENTS_FILE, _chief_listeners(config, run_dir, listeners, tensorboard) if chief else ()
        )
        with (
            pid_file(run_dir),
            stop_on_sigterm(run_dir) as termination,
            precision_policy(config.precision) as policy,
            errors_as_events(writer, (ValueError, TrainingError)),
        ):
            keras.utils.set_random_seed(config.seed)
            ctx = build_context(
                config,
                run_dir=run_dir,
                resuming=resume_dir is not None,
                strategy=strategy,
                chief=chief,
                policy=policy,
                writer=writer,
                callbacks=callbacks,
                started=started,
                manifest=manifest,
            )
            stopped, cached_features = False, None
            for index in itertools.count():
                if index == 1:  # the automatic recipe decides phase 2 again, from the time really left
                    replan_fine_tune(ctx)
                phases = recipe_phases(ctx.config)  # the config with the recipe's choices filled in
                if index >= len(phases):
                    break
                cached_features = phases[0].features
                stopped = fit_phase(ctx, phases[index])
                if stopped:
                    break
            result = _finish(ctx, stopped, cached_features=bool(cached_features))
    result.seconds = time.perf_counter() - started
    result.terminated = termination.received
    return result


def _chief_listeners(config: RunConfig, run_dir: Path, listeners, tensorboard: bool) -> list:
    """The caller's listeners, then the run's own TensorBoard writer (experiment tracking, issue 12)."""
    chosen = list(listeners)
    if tensorboard:
        from workbench.engine.config import unset_paths
        from workbench.engine.tensorboard import TensorBoardListener

        # A new run's epochs may be chosen later (by the automatic recipe); its phase events announce them.
        planned = None if unset_paths(config) else {p.number: p.epochs for p in recipe_phases(config)}
        chosen.append(TensorBoardListener(run_dir, planned))
    return chosen


def _finish(ctx: RunContext, stopped: bool, *, cached_features: bool) -> RunResult:
    """Save the best epoch of any phase as `model.keras`, write the `done` event, return the result."""
    from pipelines.files import atomic_path

    state, model_path = ctx.state, None
    restore_drop_rates(ctx)
    if ctx.best_weights is not None:
        ctx.model.set_weights(ctx.best_weights)
        model_path = ctx.run_dir / MODEL_FILE
        with atomic_path(model_path) as tmp:
            fixed_size_model(ctx).save(tmp)
    if model_path is not None and ctx.manifest.multi_label:
        _tune_thresholds(ctx)
    warning = None if ctx.manifest.multi_label else _chance_warning(ctx)
    # What the `done` event says and what the caller gets back: one set of facts.
    outcome = dict(
        run_dir=ctx.run_dir,
        best_val_accuracy=state.best_val_accuracy,
        model_path=model_path,
        stopped=stopped,
        best_phase=state.best_phase,
        best_epoch=state.best_epoch,
    )
    ctx.writer.done(**outcome, **({"warning": warning} if warning else {}))
    return RunResult(
        **outcome,
        precision=ctx.policy,
        strategy=strategy_label(ctx.strategy),
        replicas=ctx.batching.replicas,
        global_batch_size=ctx.batching.global_batch,
        cached_features=cached_features,
        chief=ctx.chief,
        warning=warning,
    )


def _tune_thresholds(ctx: RunContext) -> None:
    """Multi-label runs: per-label thresholds maximising F1 on the validation split, from the best model, saved
    as `thresholds.json` (`workbench.evaluation.multilabel`) and announced in a `thresholds` event."""
    import numpy as np

    from workbench.evaluation.multilabel import tune_thresholds, write_thresholds

    probabilities = np.concatenate([ctx.model.predict_on_batch(x) for x, _ in ctx.datasets.plain("val")])
    targets = ctx.manifest.split_targets("val")
    thresholds, f1 = tune_thresholds(targets, probabilities)
    path = write_thresholds(ctx.run_dir, ctx.manifest.classes, thresholds, f1, len(targets))
    ctx.writer.emit("thresholds", path=str(path), thresholds=[float(t) for t in thresholds], val_f1=f1)


def _chance_warning(ctx: RunContext) -> str | None:
    """Issue 12: a run whose best validation accuracy is within the noise of guessing says so, and why."""
    from workbench.engine.chance import train_warning

    def counts(split: str) -> list[int]:
        per_class = ctx.manifest.class_counts(split)
        return [per_class.get(name, 0) for name in ctx.manifest.classes]

    config = ctx.config
    return train_warning(
        ctx.state.best_val_accuracy,
        counts("val"),
        train_counts=counts("train"),
        epochs=config.epochs,
        fine_tune_epochs=None if config.from_scratch else config.fine_tune_epochs,
        image_size=ctx.image_size,
        learning_rate=config.recipe.learning_rate,
    )
