"""The run context: what every phase of one run shares, built once before the first phase.

`open_run` picks the run directory (a new one, the one being resumed, or a worker's scratch copy);
`build_context` ingests (or reloads) the data, builds the datasets and the model, and restores the
best weights of a resumed run. The phases (`workbench.engine.phases`) then read and update the
context: the model's weights, `state` (saved as `checkpoints/state.json`) and `best_weights`.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.files import remove_stale_temporaries
from workbench.engine.config import SAMPLE_IMAGE_SIZE, RunConfig, chosen_paths
from workbench.engine.events import EventWriter, read_events
from workbench.engine.rundir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    STOP_FILE,
    create_run_dir,
    write_labels,
)
from workbench.engine.strategy import Batching

if TYPE_CHECKING:
    from workbench.engine.callbacks import TrainState

# Imbalance above which `class_weights=auto` weights the loss (largest / smallest class count).
IMBALANCE_RATIO = 1.5


@dataclasses.dataclass
class RunContext:
    """One run in progress. Everything but `state`, `best_weights` and the model's weights is fixed
    once the context is built."""

    config: RunConfig
    run_dir: Path
    resuming: bool
    strategy: Any  # tf.distribute.Strategy
    chief: bool  # this process writes the run (always, except on the other workers of a multi-worker run)
    policy: str  # the resolved Keras dtype policy (float32, mixed_float16, mixed_bfloat16)
    writer: EventWriter
    state: TrainState
    manifest: Any  # pipelines.Manifest
    image_size: int  # pixels
    batching: Batching
    class_weight: dict[int, float] | None
    datasets: Any  # pipelines.Datasets, train and val batched for `batching`
    model: Any  # the full keras.Model
    drop_rates: dict[str, float]  # stochastic-depth rate of every block Dropout layer, as built
    callbacks: Sequence[Any] = ()  # the user's Keras callbacks, appended to every phase's fit
    best_weights: list[np.ndarray] | None = None  # the best epoch's weights so far (by val accuracy)
    # time.perf_counter() by which training must end for the run to finish within --time-budget (None: no budget)
    deadline: float | None = None
    planned: Any = None  # (auto.DataFacts, auto.Speed) the automatic recipe planned with (None: it did not plan)
    budget_spent: bool = False  # the time budget ended a phase early: later phases are skipped
    # The phases the budget may shorten: all of them under --time-budget; under auto's own default budget, only
    # those whose epochs auto chose (epochs the user gave are never cut by a budget the user did not give).
    budgeted_phases: frozenset[int] = frozenset()

    @property
    def sizes(self) -> dict[str, int]:
        """Images per split."""
        return self.manifest.split_sizes()


@contextmanager
def open_run(config: RunConfig, *, chief: bool, resume_dir: Path | None) -> Iterator[Path]:
    """The run directory: `resume_dir`, or a new one under `config.out`.

    Only the chief writes the run. The other workers run the very same code (every save included:
    collective ops must match across workers) into a scratch directory that is deleted on exit, the
    pattern of TensorFlow's multi-worker Keras guide.
    """
    if chief:
        yield resume_dir if resume_dir is not None else create_run_dir(config.out, config.variant, config.run_dir)
        return
    if resume_dir is not None:
        raise ValueError("resuming a multi-worker run is not supported; start a new run")
    scratch = Path(tempfile.mkdtemp(prefix="workbench-worker-"))
    try:
        (scratch / CHECKPOINTS_DIR).mkdir()
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_context(
    config: RunConfig,
    *,
    run_dir: Path,
    resuming: bool,
    strategy,
    chief: bool,
    policy: str,
    writer: EventWriter,
    callbacks: Sequence[Any] = (),
    started: float | None = None,
    manifest: Any = None,
) -> RunContext:
    """Everything the phases need, under the precision policy (the model is built inside it).

    `started` (time.perf_counter() when the run began) anchors the time budget."""
    from workbench.engine.strategy import is_multi_worker, shard_policy_name

    # The manifest first: config.yaml marks a run as resumable, so a run interrupted during ingest
    # (minutes on real photos) leaves no config and can simply be started again (issue 11, B2).
    manifest = _load_data(config, run_dir, resuming, manifest)
    deadline = planned = None
    budgeted = frozenset({1, 2}) if config.time_budget else frozenset()
    if not resuming:  # a resumed run's config.yaml already holds the recipe chosen when it started
        batching = Batching.of(strategy, config.batch_size)
        config, deadline, planned = _choose_recipe(
            config, manifest, batching, writer, started, multi_worker=is_multi_worker(strategy)
        )
        chosen = chosen_paths(config)
        budgeted |= {n for n, path in ((1, "epochs"), (2, "fine_tune_epochs")) if path in chosen}
    state = _initial_state(config, run_dir, resuming)
    write_labels(run_dir, manifest.classes)
    image_size = config.image_size or (SAMPLE_IMAGE_SIZE if config.data is None else _variant_resolution(config))
    batching = Batching.of(strategy, config.batch_size)
    datasets = _datasets(config, manifest, image_size, batching, shard_policy_name(strategy))
    with strategy.scope():
        model = _build_model(config, len(manifest.classes), image_size, multi_label=manifest.multi_label)
    return RunContext(
        config=config,
        run_dir=run_dir,
        resuming=resuming,
        strategy=strategy,
        chief=chief,
        policy=policy,
        writer=writer,
        state=state,
        manifest=manifest,
        image_size=image_size,
        batching=batching,
        # Keras' class weights take one class per image; a multi-label run weighs its labels through its loss.
        class_weight=None
        if manifest.multi_label
        else class_weights(manifest.split_labels("train"), config.recipe.class_weights),
        datasets=datasets,
        model=model,
        drop_rates=_block_drop_rates(model),
        callbacks=tuple(callbacks),
        best_weights=_restore_best(model, run_dir, state),
        deadline=deadline,
        planned=planned,
        budgeted_phases=budgeted,
    )


def _choose_recipe(
    config: RunConfig, manifest, batching: Batching, writer: EventWriter, started: float | None, *, multi_worker: bool
):
    """The config with every option the user left empty chosen, and the training deadline of the budget.

    `fixed` fills them with the documented defaults. `auto` measures this machine (`measure_speed`, seconds)
    and lets the rules of `workbench.engine.auto` choose; its decisions go to a `plan` event (the CLI prints
    them) and to config.yaml (`auto_decisions`), one line each."""
    import time

    from workbench.engine import auto
    from workbench.engine.config import planned_paths, with_overrides, with_recipe_defaults

    budget = config.budget_seconds()
    if multi_worker and config.recipe_mode == "auto":
        # Every worker must train the very same recipe (their collective ops must match), but each would measure
        # its own machine and could plan differently, and a budget could end their phases at different epochs.
        config = with_recipe_defaults(with_overrides(config, {"recipe_mode": "fixed"}))
        reason = "several workers train one model: the fixed recipe's values, and no time budget"
        config.auto_decisions = [f"recipe_mode = fixed: {reason}"]
        writer.emit("plan", decisions=config.auto_decisions, budget_s=None)
        return config, None, None
    if config.from_scratch and config.recipe_mode == "auto":
        # The rules of `auto` plan transfer learning (a head on cached features, then a few blocks), measured on
        # ImageNet weights: they say nothing about training every layer from random weights.
        config = with_overrides(config, {"recipe_mode": "fixed"})
        config.auto_decisions = [
            "recipe_mode = fixed: training from scratch; the automatic recipe plans transfer learning"
        ]
        writer.emit("plan", decisions=config.auto_decisions, budget_s=budget)
    if config.recipe_mode == "fixed":
        config = with_recipe_defaults(config)
        deadline = None if budget is None or started is None else started + budget - auto.FINISH_SECONDS
        return config, deadline, None
    from workbench.engine.speed import measure_speed

    facts = auto.DataFacts.of(manifest)
    given = {p: v for p, v in _flat(config).items() if p in planned_paths() and v is not None}
    own = SAMPLE_IMAGE_SIZE if config.data is None else _variant_resolution(config)
    resolution = given.get("image_size") or auto.choose_image_size(facts, own).value
    speed = measure_speed(config.variant, resolution, batching.global_batch, num_classes=len(manifest.classes))
    decisions = auto.plan(
        facts,
        speed,
        variant_resolution=own,
        batch_size=batching.global_batch,
        budget_seconds=budget,
        given=given,
    )
    chosen = {d.path: d.value for d in decisions}
    config = with_recipe_defaults(config, chosen)  # the budget and image size too, when they were left empty
    budget = config.budget_seconds()
    config.auto_decisions = [d.line() for d in decisions]
    writer.emit("plan", decisions=config.auto_decisions, budget_s=budget, images_per_s=speed.forward_images_per_s)
    finish = auto.finish_seconds(facts, speed, config.image_size or resolution)
    deadline = (started if started is not None else time.perf_counter()) + budget - finish
    return config, deadline, (facts, speed)


def replan_fine_tune(ctx: RunContext) -> None:
    """Before phase 2 of a new auto run, decide phase 2 again from the time really left (see
    `auto.replan_fine_tune`); the new choices replace the old in the config, config.yaml and a `plan` event."""
    import time

    from workbench.engine import auto
    from workbench.engine.config import planned_paths, with_overrides

    if ctx.planned is None or ctx.deadline is None or ctx.state.phase >= 2:
        return
    lines = ctx.config.auto_decisions or []
    chosen = chosen_paths(ctx.config)
    if not chosen & set(auto.FINE_TUNE_PATHS):
        return
    given = {p: v for p, v in _flat(ctx.config).items() if p in planned_paths() and p not in chosen}
    facts, speed = ctx.planned
    seconds_left = ctx.deadline - time.perf_counter()
    decisions = auto.replan_fine_tune(facts, speed, resolution=ctx.image_size, seconds_left=seconds_left, given=given)
    fills = {d.path: d.value for d in decisions}
    replaced = {d.path for d in decisions}  # a choice the new plan does not revisit keeps its first line
    kept = [line for line in lines if line.split(" = ", 1)[0] not in replaced]
    config = with_overrides(ctx.config, fills)
    config.auto_decisions = kept + [d.line() for d in decisions]
    config.save(ctx.run_dir / CONFIG_FILE)
    ctx.config = config
    ctx.writer.emit(
        "plan",
        decisions=[d.line() for d in decisions],
        budget_s=config.budget_seconds(),
        seconds_left=seconds_left,
        stage="fine-tune",
    )


def _flat(config: RunConfig) -> dict[str, Any]:
    from workbench.config_fields import iter_fields

    return {path: value for path, _, value, _ in iter_fields(config)}


def _initial_state(config: RunConfig, run_dir: Path, resuming: bool) -> TrainState:
    """A new run saves its config; a resumed one reloads its state and clears the STOP that ended it."""
    from workbench.engine.callbacks import TrainState

    if not resuming:
        config.save(run_dir / CONFIG_FILE)
        return TrainState()
    (run_dir / STOP_FILE).unlink(missing_ok=True)  # a STOP that ended the last attempt
    remove_stale_temporaries(run_dir / CHECKPOINTS_DIR)  # a killed writer's leftovers (we hold the lock)
    done = [e for e in read_events(run_dir) if e["type"] == "done"]
    if done and not done[-1].get("stopped") and (run_dir / MODEL_FILE).exists():
        raise ValueError(
            f"run {run_dir} is already complete ({MODEL_FILE} is there); start a new run instead of resuming"
        )
    return TrainState.load(run_dir) or TrainState()


def _load_data(config: RunConfig, run_dir: Path, resuming: bool, given: Any = None):
    """The run's manifest: ingested into `run_dir` for a new run (or `given`, saved there), reloaded for a
    resumed one."""
    from pipelines import Manifest, ingest

    if given is not None and not resuming:
        given.save(run_dir / MANIFEST_FILE)
        return given
    if resuming:
        path = run_dir / MANIFEST_FILE
        if not path.exists():
            raise ValueError(f"{path} is missing, so the run cannot resume on the same data; start a new run")
        return Manifest.load(path)
    overrides = {"seed": config.seed}
    if config.recipe.val_fraction is not None:
        overrides["val_fraction"] = config.recipe.val_fraction
    if config.recipe.test_fraction is not None:
        overrides["test_fraction"] = config.recipe.test_fraction
    if config.recipe.group_by:
        overrides["group_by"] = config.recipe.group_by
    manifest = ingest(config.data, workdir=run_dir, **overrides)
    sizes = manifest.split_sizes()
    if sizes["train"] == 0 or sizes["val"] == 0:
        raise ValueError(
            f"{manifest.source} gives {sizes['train']} training and {sizes['val']} validation "
            "images; training needs both: add images (a few per class at least) or change "
            "--val-fraction"
        )
    return manifest


def _variant_resolution(config: RunConfig) -> int:
    from workbench.models import get_variant

    return get_variant(config.variant).resolution


def _datasets(config: RunConfig, manifest, image_size: int, batching: Batching, shard_policy: str):
    """Train and val image pipelines in global batches that every replica can share."""
    from pipelines import make_datasets

    ds = make_datasets(
        manifest,
        image_size=image_size,
        batch_size=batching.global_batch,
        augment=config.augment,
        seed=config.seed,
        shard_policy=shard_policy,
    )
    sizes = manifest.split_sizes()
    ds.train = batching.even_batches(ds.train, sizes["train"])
    ds.val = batching.even_batches(ds.val, sizes["val"])
    return ds


def _build_model(config: RunConfig, num_classes: int, image_size: int, *, multi_label: bool = False):
    """The variant with its configured weights and a new head for `num_classes` (zero-initialised
    when the backbone is ImageNet's or random; a checkpoint's own head is kept). Progressive learning
    feeds images of several sizes, so its model takes any size (`fixed_size_model` gives the saved one).
    A multi-label head is the same Dense `predictions` layer with a sigmoid (each label on its own)."""
    from workbench.engine.heads import zero_head
    from workbench.models import build_model

    weights = config.weights
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    side = None if config.progressive else image_size
    model = build_model(
        config.variant,
        num_classes=num_classes,
        weights=weights,
        input_shape=(side, side, 3),
        dropout=config.recipe.dropout,
        classifier_activation="sigmoid" if multi_label else "softmax",
    )
    if weights is None or str(weights) == "imagenet":
        zero_head(model)
    return model


def fixed_size_model(ctx: RunContext):
    """The run's model as it is saved and served: at the run's image size. A progressive run trained a model
    that takes any size; the copy at `ctx.image_size` holds the same weights, so `model.keras` looks the same
    whichever way it was trained (export and evaluation read its resolution from its input).
    A multi-label run is always saved from such a copy: it is not compiled, so its loss (maybe `AsymmetricLoss`,
    not a Keras class) is not in `model.keras`, which `model_files.load_keras_model` would refuse."""
    from workbench.models import build_model
    from workbench.serving.model_files import model_resolution

    multi_label = ctx.manifest.multi_label
    if model_resolution(ctx.model) is not None and not multi_label:
        return ctx.model
    fixed = build_model(
        ctx.config.variant,
        num_classes=len(ctx.manifest.classes),
        weights=None,
        input_shape=(ctx.image_size, ctx.image_size, 3),
        dropout=ctx.config.recipe.dropout,
        classifier_activation="sigmoid" if multi_label else "softmax",
    )
    fixed.set_weights(ctx.model.get_weights())
    return fixed


def _block_drop_rates(model) -> dict[str, float]:
    """The stochastic-depth Dropout layers inside blocks and their rates (a phase turns those of
    frozen blocks off, `workbench.engine.phases.set_trainable`)."""
    import keras

    from workbench.models.surgery import block_of

    return {
        layer.name: layer.rate
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout) and block_of(layer.name) is not None
    }


def _restore_best(model, run_dir: Path, state: TrainState) -> list[np.ndarray] | None:
    """Load a resumed run's best checkpoint into `model`; its weights, or None when there is none."""
    from workbench.engine.callbacks import load_weights

    path = run_dir / CHECKPOINTS_DIR / state.best_weights if state.best_weights else None
    if path is None or not path.exists():
        return None
    load_weights(model, path)
    return model.get_weights()


def class_weights(labels, mode: str = "auto") -> dict[int, float] | None:
    """Loss weights per class index, inversely proportional to the class counts of `labels`
    (sklearn's "balanced": n / (classes x count)), or None for an unweighted loss.

    mode: `balanced` always weights, `none` never, `auto` only when the largest class has more
    than `IMBALANCE_RATIO` times the images of the smallest.
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if mode == "none" or len(classes) < 2:
        return None
    if mode == "auto" and counts.max() <= IMBALANCE_RATIO * counts.min():
        return None
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}
