"""A phase of the recipe as data, and `fit_phase`: the one function that trains any phase.

A `Phase` says how many epochs, at which peak learning rate, what trains (the head alone, or the
head and the top N blocks) and on which data (images, or backbone features cached once). Every phase
uses AdamW with warmup + cosine decay (`workbench.engine.optim`), label-smoothed cross-entropy,
class weights, early stopping, and a checkpoint after every completed epoch; the recipe's phase list
is `workbench.engine.recipe.recipe_phases`.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager

from workbench.engine.context import RunContext
from workbench.engine.rundir import CHECKPOINTS_DIR, stop_requested
from workbench.engine.strategy import known_cardinality, strategy_label

FEATURES_FILE = "features.npz"
# Phase 2 trains on the frozen blocks' cached output when both splits' activations fit in this much memory.
TRUNK_CACHE_MAX_BYTES = 2 * 1024**3
# From scratch, BatchNorm's moving statistics start at 0 and 1. At the builders' 0.99 they lag the network for
# hundreds of steps, and validation (inference mode) reads them: a small dataset's run would validate on noise.
# 0.9 settles in a few dozen steps, as in the scaling search's proxy training.
SCRATCH_BN_MOMENTUM = 0.9


class TrainingError(RuntimeError):
    """Training could not go on (the loss diverged, say); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `fit` of the recipe.

    `number` names the phase in events and checkpoints (`last-p<number>e<epoch>`); the phases of a
    run count 1, 2, ... in order. `unfreeze_blocks`: None trains the head alone (backbone frozen);
    n trains the head and the top n blocks (BatchNorm stays frozen). `features`: train the head on
    pooled backbone features computed once (only with the backbone frozen). `from_best`: start
    from the best weights of the earlier phases rather than the last. `scratch`: every layer trains,
    BatchNorm included (random initial weights). `progressive`: the image size and regularisation
    grow across the epochs (`workbench.engine.progressive`); only for phases fed with images.
    """

    number: int
    name: str
    epochs: int
    learning_rate: float
    unfreeze_blocks: int | None = None
    features: bool = False
    from_best: bool = False
    scratch: bool = False
    progressive: bool = False

    def __post_init__(self):
        if self.features and (self.unfreeze_blocks is not None or self.scratch):
            raise ValueError(
                f"phase {self.number} ({self.name}): cached features need a frozen backbone; "
                "set unfreeze_blocks=None or features=False"
            )
        if self.progressive and self.unfreeze_blocks is None and not self.scratch:
            raise ValueError(
                f"phase {self.number} ({self.name}): progressive learning grows the images a backbone sees; a "
                "phase training the head alone has none to grow (set unfreeze_blocks, or scratch=True)"
            )

    @property
    def trains_backbone(self) -> bool:
        return self.scratch or self.unfreeze_blocks is not None


def fit_phase(ctx: RunContext, phase: Phase) -> bool:
    """Train `phase`, or what is left of it in a resumed run; True when a STOP file ended it."""
    state = ctx.state
    if state.phase > phase.number or (state.phase == phase.number and state.phase_done):
        return False  # completed before this process started
    if state.phase < phase.number:
        # The previous phase's "last" files stay until this phase completes its first epoch.
        state.phase, state.epochs_done, state.phase_done, state.epochs_since_best = phase.number, 0, False, 0
        state.save(ctx.run_dir)
    if _budget_spent(ctx, phase):
        return False
    if phase.from_best and ctx.best_weights is not None:
        ctx.model.set_weights(ctx.best_weights)  # fine-tune from the best head, not the last one
    unfrozen = set_trainable(ctx, phase)
    trunk = _trunk_cache_wanted(ctx, phase, unfrozen)
    _phase_event(ctx, phase, unfrozen, trunk)
    data = _phase_data(ctx, phase, unfrozen[0] if trunk else None)
    if data is None:
        return True  # STOP during the feature pass
    fit_model, train, val = data
    return _fit(ctx, phase, fit_model, train, val)


def _budget_spent(ctx: RunContext, phase: Phase) -> bool:
    """A later phase is skipped (with a `budget` event) when the time budget is spent (it ended an earlier
    phase, or its deadline has passed): the run goes on to save its best epoch, evaluate and export within the
    budget. Phase 1 always runs."""
    import time

    if ctx.deadline is None or phase.number == 1 or phase.number not in ctx.budgeted_phases:
        return False
    if not ctx.budget_spent and time.perf_counter() < ctx.deadline:
        return False
    ctx.writer.emit(
        "budget", phase=phase.number, epoch=0, message=f"phase {phase.number} skipped: the time budget is spent"
    )
    ctx.state.phase_done = True
    ctx.state.save(ctx.run_dir)
    return True


def set_trainable(ctx: RunContext, phase: Phase) -> list[str]:
    """Freeze for `phase`; returns the unfrozen blocks. Frozen blocks also stop their stochastic
    depth (a frozen block must compute what the cached features hold: Keras freezes BatchNorm's
    statistics with `trainable=False`, but a frozen Dropout still drops in training mode)."""
    from workbench.models.surgery import block_of, freeze_backbone, unfreeze_all, unfreeze_top_blocks

    if phase.scratch:
        unfrozen = unfreeze_all(ctx.model, bn_momentum=SCRATCH_BN_MOMENTUM)
    elif phase.unfreeze_blocks is None:
        freeze_backbone(ctx.model)
        unfrozen: list[str] = []
    else:
        unfrozen = unfreeze_top_blocks(ctx.model, phase.unfreeze_blocks)
    for name, rate in ctx.drop_rates.items():
        ctx.model.get_layer(name).rate = rate if block_of(name) in unfrozen else 0.0
    return unfrozen


def restore_drop_rates(ctx: RunContext) -> None:
    """Every stochastic-depth rate back to its built value (before the model is saved)."""
    for name, rate in ctx.drop_rates.items():
        ctx.model.get_layer(name).rate = rate


def _trunk_cache_wanted(ctx: RunContext, phase: Phase, unfrozen: list[str]) -> bool:
    """Whether a fine-tuning phase trains its unfrozen blocks on the frozen blocks' output computed once.

    Below the first unfrozen block nothing changes during the phase (frozen weights, BatchNorm in inference
    mode, stochastic depth off), so without pixel augmentation every epoch would recompute the same
    activations; on Lite0 with six blocks unfrozen they are most of the forward pass. `cache_features`
    decides, as for phase 1: on, off, or auto (no augmentation, and the activations of both splits fit in
    TRUNK_CACHE_MAX_BYTES of memory)."""
    if not unfrozen or phase.unfreeze_blocks is None or phase.progressive:
        return False  # the progressive stages feed images of another size each: nothing to compute once
    mode = ctx.config.recipe.cache_features
    if mode != "auto":
        return mode == "on"
    if ctx.config.augment != "none":
        return False
    from workbench.models.surgery import block_of

    first = next(layer for layer in ctx.model.layers if block_of(layer.name) == unfrozen[0])
    per_image = math.prod(first.input.shape[1:]) * 4  # float32
    return per_image * (ctx.sizes["train"] + ctx.sizes["val"]) <= TRUNK_CACHE_MAX_BYTES


def _phase_event(ctx: RunContext, phase: Phase, unfrozen: list[str], trunk: bool) -> None:
    state, batching, sizes = ctx.state, ctx.batching, ctx.sizes
    resumed = ctx.resuming and state.phase == phase.number and state.epochs_done > 0
    what = (
        {"unfrozen_blocks": unfrozen, "cached_trunk": trunk, "progressive": phase.progressive}
        if phase.trains_backbone
        else {"cached_features": phase.features}
    )
    ctx.writer.phase(
        phase=phase.number,
        name=phase.name,
        epochs=phase.epochs,
        start_epoch=state.epochs_done + 1 if resumed else 1,
        resumed=resumed,
        strategy=strategy_label(ctx.strategy),
        replicas=batching.replicas,
        batch_size=batching.per_replica,
        global_batch_size=batching.global_batch,
        precision=ctx.policy,
        image_size=ctx.image_size,
        num_train=sizes["train"],
        num_val=sizes["val"],
        skipped_images={split: batching.skipped(sizes[split]) for split in ("train", "val")},
        **what,
    )


def _phase_data(ctx: RunContext, phase: Phase, trunk_block: str | None = None):
    """`(model to fit, train, val)` for `phase`, or None when a STOP came during the feature pass.

    On cached features the model fit is the head alone (`classifier_head`); with `trunk_block`, it is the
    model from that block up (`split_at_block`), fit on the frozen trunk's cached output. Both share their
    weights with the full model, which the checkpoints save."""
    batching, sizes = ctx.batching, ctx.sizes
    if trunk_block is not None:
        return _trunk_data(ctx, phase, trunk_block)
    if phase.features:
        from workbench.engine.features import cached_features
        from workbench.models.surgery import classifier_head

        cache = cached_features(
            ctx.run_dir / CHECKPOINTS_DIR / FEATURES_FILE,
            _feature_cache_key(ctx),
            ctx.model,
            ctx.datasets,
            writer=ctx.writer,
            sizes=sizes,
            global_batch=batching.global_batch,
            should_stop=lambda: stop_requested(ctx.run_dir),
        )
        if cache is None:
            return None
        with ctx.strategy.scope():
            return (classifier_head(ctx.model), *_cached_datasets(ctx, cache))
    train = known_cardinality(ctx.datasets.train, batching.batches(sizes["train"]))
    val = known_cardinality(ctx.datasets.val, batching.batches(sizes["val"]))
    return ctx.model, train, val


def _cached_datasets(ctx: RunContext, cache: dict):
    """Train (reshuffled every epoch) and val pipelines over cached arrays, batched like the images'."""
    from workbench.engine.features import feature_dataset
    from workbench.engine.strategy import with_sharding_policy

    batching, gb = ctx.batching, ctx.batching.global_batch
    splits = []
    for split, shuffle in (("train", True), ("val", False)):
        ds = feature_dataset(cache[f"{split}_x"], cache[f"{split}_y"], gb, shuffle=shuffle, seed=ctx.config.seed)
        ds = with_sharding_policy(batching.even_batches(ds, len(cache[f"{split}_x"])), ctx.strategy)
        splits.append(known_cardinality(ds, batching.batches(ctx.sizes[split])))
    return splits


def _trunk_data(ctx: RunContext, phase: Phase, block: str):
    """`_phase_data` on the trunk's activations below `block`, computed once for this phase."""
    from workbench.engine.features import cached_activations
    from workbench.models.surgery import split_at_block

    batching, sizes = ctx.batching, ctx.sizes
    with ctx.strategy.scope():
        trunk, top = split_at_block(ctx.model, block)
    cache = cached_activations(
        trunk,
        ctx.datasets,
        writer=ctx.writer,
        sizes=sizes,
        global_batch=batching.global_batch,
        phase=phase.number,
        should_stop=lambda: stop_requested(ctx.run_dir),
    )
    if cache is None:
        return None
    return (top, *_cached_datasets(ctx, cache))


def _feature_cache_key(ctx: RunContext) -> dict:
    """What the cached features depend on: a cache made for another key is recomputed."""
    return {
        "variant": ctx.config.variant,
        "weights": str(ctx.config.weights),
        "image_size": ctx.image_size,
        "splits": ctx.sizes,
        "seed": ctx.config.seed,
    }


def _fit(ctx: RunContext, phase: Phase, fit_model, train, val) -> bool:
    """`fit_model.fit` for the rest of `phase` with the run's callbacks; True when STOP ended it."""
    from workbench.engine.callbacks import (
        BudgetGuard,
        NonFiniteGuard,
        ProgressEvents,
        RunCheckpoint,
        RunSignals,
        StopFile,
    )
    from workbench.engine.strategy import keras_fit_fixes

    state, n_train = ctx.state, ctx.sizes["train"]
    steps = ctx.batching.steps(n_train)
    optimizer = _compile(ctx, phase, fit_model, steps)
    initial_epoch = _restore_last_epoch(ctx, fit_model, optimizer)
    if initial_epoch >= phase.epochs:
        return False
    signals = RunSignals()
    checkpoint = RunCheckpoint(
        run_dir=ctx.run_dir,
        state=state,
        model=ctx.model,
        optimizer=optimizer,
        patience=ctx.config.recipe.early_stopping_patience,
        signals=signals,
        best_weights=ctx.best_weights,
    )
    progress = ProgressEvents(
        ctx.writer,
        phase=phase.number,
        epochs=phase.epochs,
        steps=steps,
        num_images=n_train,
        global_batch=ctx.batching.global_batch,
        signals=signals,
    )
    callbacks = [NonFiniteGuard(phase.number, signals), StopFile(ctx.run_dir, signals), progress, checkpoint]
    guard = None
    if ctx.deadline is not None and phase.number in ctx.budgeted_phases:  # after the checkpoint: the epoch is saved
        guard = BudgetGuard(ctx.deadline, ctx.writer, phase.number, phase.epochs)
        callbacks.append(guard)
    with keras_fit_fixes(fit_model, ctx.strategy), _head_dropout_kept(ctx.model):
        for first, end, stage_train in _epoch_runs(ctx, phase, fit_model, train, initial_epoch):
            fit_model.fit(
                stage_train,
                validation_data=val,
                epochs=end,
                initial_epoch=first,
                callbacks=[*callbacks, *ctx.callbacks],
                class_weight=ctx.class_weight,
                shuffle=False,
                verbose=0,
            )
            if fit_model.stop_training:  # STOP, divergence, early stopping or the budget: not the next stage
                break
    ctx.best_weights = checkpoint.best_weights
    ctx.budget_spent = ctx.budget_spent or (guard is not None and guard.ended_phase)
    if signals.diverged:
        raise TrainingError(_diverged_message(ctx, signals.diverged))
    if signals.stopped:
        return True
    state.phase_done = True
    state.save(ctx.run_dir)
    return False


def _epoch_runs(ctx: RunContext, phase: Phase, fit_model, train, initial_epoch: int):
    """`(first epoch, end epoch, train data)` for each `fit` of the phase from `initial_epoch` on: the whole
    phase at once, or one progressive stage after another (each at its own image size and regularisation).

    One optimizer and its learning-rate schedule span the stages, so the stages continue one cosine decay;
    validation data stays at the target size."""
    if not phase.progressive:
        yield initial_epoch, phase.epochs, train
        return
    from pipelines.augment import get_preset
    from workbench.engine.progressive import schedule

    recipe = ctx.config.recipe
    head = _head_dropout(ctx.model) if recipe.progressive_dropout else None
    stages = schedule(
        phase.epochs,
        ctx.image_size,
        get_preset(ctx.config.augment),
        head.rate if head is not None else 0.0,
        stages=recipe.progressive_stages,
        start=recipe.progressive_start,
    )
    for stage in stages:
        if stage.end <= initial_epoch:
            continue  # a resumed run: done before this process started
        if head is not None:
            head.rate = stage.dropout
            fit_model.train_function = None  # the rate is read when the training step is traced: trace again
        described = stage.describe() if head is not None else {**stage.describe(), "dropout": None}
        ctx.writer.emit("stage", phase=phase.number, stages=len(stages), **described)
        yield max(stage.first, initial_epoch), stage.end, _stage_train_data(ctx, stage)


def _stage_train_data(ctx: RunContext, stage):
    """The training images of a progressive `stage`: its size and augmentation strength, batched as the run's."""
    from pipelines.augment import get_preset
    from pipelines.dataset import DatasetConfig, make_dataset
    from workbench.engine.strategy import shard_policy_name

    batching, n = ctx.batching, ctx.sizes["train"]
    config = DatasetConfig(
        image_size=stage.image_size,
        batch_size=batching.global_batch,
        augment=stage.preset(get_preset(ctx.config.augment)),
        seed=ctx.config.seed + stage.index,
        shard_policy=shard_policy_name(ctx.strategy),
    )
    train = batching.even_batches(make_dataset(ctx.manifest, "train", config, training=True), n)
    return known_cardinality(_any_image_size(train), batching.batches(n))


def _any_image_size(dataset):
    """`dataset` with its images' height and width left unknown in its element spec.

    Keras traces the training step for the spec of the data it is given. Every stage has another image size, so
    each would trace it again: 18 s for B0v2 on 2 idle CPU cores (bench_progressive.py --measure-trace), more than a
    small-image stage saves. With the size unknown, the first trace serves every stage."""
    import tensorflow as tf

    def loosen(images, labels):
        return tf.compat.v1.placeholder_with_default(images, [None, None, None, images.shape[-1]]), labels

    return dataset.map(loosen)


def _head_dropout(model):
    from workbench.models.surgery import HEAD_DROPOUT_LAYER

    try:
        return model.get_layer(HEAD_DROPOUT_LAYER)
    except ValueError:  # built with dropout 0: no layer
        return None


@contextmanager
def _head_dropout_kept(model):
    """The classifier's dropout rate is restored after the phase (progressive stages change it)."""
    head = _head_dropout(model)
    rate = None if head is None else head.rate
    try:
        yield
    finally:
        if head is not None:
            head.rate = rate


def _compile(ctx: RunContext, phase: Phase, fit_model, steps: int):
    """Compile `fit_model` for `phase` (AdamW, warmup + cosine over the phase); returns the optimizer."""
    import keras

    from workbench.engine.optim import adamw
    from workbench.engine.precision import wrap_optimizer

    recipe = ctx.config.recipe
    with ctx.strategy.scope():
        optimizer = adamw(
            phase.learning_rate,
            phase.epochs * steps,
            warmup_fraction=recipe.warmup_fraction,
            weight_decay=recipe.weight_decay,
        )
        optimizer = wrap_optimizer(optimizer, ctx.policy)
        if ctx.manifest.multi_label:  # sigmoid head: each label is a binary decision
            from workbench.engine.losses import multi_label_loss, multi_label_metrics

            loss = multi_label_loss(recipe.loss, recipe.label_smoothing)
            metrics = multi_label_metrics(ctx.manifest.num_classes)
        else:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
            metrics = ["accuracy"]
        fit_model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return optimizer


def _restore_last_epoch(ctx: RunContext, fit_model, optimizer) -> int:
    """In a resumed phase, the weights and optimizer state of its last completed epoch; returns
    the number of epochs already done (`fit`'s `initial_epoch`)."""
    from workbench.engine.callbacks import load_optimizer, load_weights

    state = ctx.state  # `fit_phase` has moved the state to this phase
    if state.epochs_done > 0 and state.last_weights:
        ckpt = ctx.run_dir / CHECKPOINTS_DIR
        load_weights(ctx.model, ckpt / state.last_weights)
        with ctx.strategy.scope():
            load_optimizer(optimizer, fit_model.trainable_variables, ckpt / state.last_optimizer)
    return state.epochs_done


def _diverged_message(ctx: RunContext, diverged: str) -> str:
    state = ctx.state
    if state.best_weights:
        kept = (
            f"the last good checkpoints are kept in {ctx.run_dir / CHECKPOINTS_DIR} (best: "
            f"val_accuracy {state.best_val_accuracy:.4f}, phase {state.best_phase} epoch "
            f"{state.best_epoch})"
        )
    else:
        kept = "no epoch had completed, so there is no checkpoint"
    return (
        f"{diverged}; training stopped and {kept}. Lower the learning rate "
        f"(--learning-rate / --fine-tune-learning-rate) or use --precision float32, then start a new run"
    )
