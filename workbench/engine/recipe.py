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
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.files import remove_stale_temporaries
from workbench.engine.config import SAMPLE_IMAGE_SIZE, RunConfig
from workbench.engine.events import EVENTS_FILE, EventWriter, read_events
from workbench.engine.rundir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    STOP_FILE,
    atomic_path,
    create_run_dir,
    pid_file,
    stop_requested,
    write_labels,
)
from workbench.engine.strategy import strategy_label

# Imbalance above which `class_weights=auto` weights the loss (largest / smallest class count).
IMBALANCE_RATIO = 1.5


class TrainingError(RuntimeError):
    """Training could not go on (the loss diverged, say); the message says what to do."""


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


def fine_tune(config: RunConfig | dict | None = None, *, listeners: Iterable[Callable[[dict], None]] = ()) -> RunResult:
    """Train a new run. `config` is a RunConfig or a dict for `RunConfig.from_dict`.

    `listeners` receive every event as it is written (the CLI's progress bar is one).
    Raises `ValueError` (bad config or data; `pipelines.DataError` is one) or `TrainingError`;
    either is also written to `events.jsonl` as an `error` event once the run directory exists.
    """
    if config is None:
        config = RunConfig()
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    config.validate()
    return _Run(config, listeners=listeners).start()


def resume(run_dir: str | Path, *, listeners: Iterable[Callable[[dict], None]] = ()) -> RunResult:
    """Continue a run from its last completed epoch (weights, optimizer state and phase)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise ValueError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); give runs/<run-id>")
    config = RunConfig.load(run_dir / CONFIG_FILE).validate()
    return _Run(config, listeners=listeners, resume_dir=run_dir).start()


class _Run:
    def __init__(self, config: RunConfig, *, listeners=(), resume_dir: Path | None = None):
        self.config = config
        self.listeners = list(listeners)
        self.resume_dir = resume_dir

    # ------------------------------------------------------------------ set-up
    def start(self) -> RunResult:
        import keras

        from workbench.engine.precision import precision_policy
        from workbench.engine.strategy import is_chief, resolve_strategy

        started = time.perf_counter()
        # The strategy first: MultiWorkerMirroredStrategy must exist before other TF ops run.
        self.strategy = resolve_strategy(self.config.strategy)
        self.chief = is_chief(self.strategy)
        # Only the chief writes the run. The other workers run the very same code (every save
        # included: collective ops must match across workers) into a scratch directory that is
        # deleted at the end, the pattern of TensorFlow's multi-worker Keras guide.
        scratch = None
        if not self.chief:
            if self.resume_dir is not None:
                raise ValueError("resuming a multi-worker run is not supported; start a new run")
            self.run_dir = scratch = Path(tempfile.mkdtemp(prefix="workbench-worker-"))
            (scratch / CHECKPOINTS_DIR).mkdir()
        elif self.resume_dir is not None:
            self.run_dir = self.resume_dir
        else:
            self.run_dir = create_run_dir(self.config.out, self.config.variant, self.config.run_dir)
        self.writer = EventWriter(self.run_dir / EVENTS_FILE, self.listeners if self.chief else ())
        from workbench.engine.callbacks import stop_on_sigterm

        try:
            with (
                pid_file(self.run_dir),
                stop_on_sigterm(self.run_dir) as termination,
                precision_policy(self.config.precision) as policy,
            ):
                self.policy = policy
                keras.utils.set_random_seed(self.config.seed)
                try:
                    result = self._train()
                except (ValueError, TrainingError) as exc:
                    self.writer.error(message=str(exc))
                    raise
                except Exception as exc:  # unexpected: still leave a readable trace in the run
                    self.writer.error(message=f"{type(exc).__name__}: {exc}")
                    raise
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        result.seconds = time.perf_counter() - started
        result.terminated = termination.received
        return result

    def _train(self) -> RunResult:
        from workbench.engine.callbacks import TrainState

        config, run_dir = self.config, self.run_dir
        resuming = self.resume_dir is not None
        if resuming:
            (run_dir / STOP_FILE).unlink(missing_ok=True)  # a STOP that ended the last attempt
            remove_stale_temporaries(run_dir / CHECKPOINTS_DIR)  # a killed writer's leftovers (we hold the lock)
            self.state = TrainState.load(run_dir) or TrainState()
            done = [e for e in read_events(run_dir) if e["type"] == "done"]
            if done and not done[-1].get("stopped") and (run_dir / MODEL_FILE).exists():
                raise ValueError(
                    f"run {run_dir} is already complete ({MODEL_FILE} is there); start a new run instead of resuming"
                )
        else:
            self.state = TrainState()
            config.save(run_dir / CONFIG_FILE)

        self.manifest = self._load_data(resuming)
        write_labels(run_dir, self.manifest.classes)
        self.image_size = config.image_size or (SAMPLE_IMAGE_SIZE if config.data is None else self._spec().resolution)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.global_batch = config.batch_size * self.replicas
        self.class_weight = self._class_weight()
        self.datasets = self._datasets()
        self.best_holder: dict[str, Any] = {}

        with self.strategy.scope():
            self.model = self._build_model()
        if self.state.best_weights and (run_dir / CHECKPOINTS_DIR / self.state.best_weights).exists():
            _load_weights(self.model, run_dir / CHECKPOINTS_DIR / self.state.best_weights)
            self.best_holder["weights"] = self.model.get_weights()

        stopped = False
        if self.state.phase == 1 and not self.state.phase_done:
            stopped = self._phase1()
        if not stopped and config.fine_tune_epochs > 0 and not (self.state.phase == 2 and self.state.phase_done):
            stopped = self._phase2()
        return self._finish(stopped)

    def _spec(self):
        from workbench.models import get_variant

        return get_variant(self.config.variant)

    def _load_data(self, resuming: bool):
        from pipelines import Manifest, ingest

        if resuming:
            path = self.run_dir / MANIFEST_FILE
            if not path.exists():
                raise ValueError(f"{path} is missing, so the run cannot resume on the same data; start a new run")
            return Manifest.load(path)
        overrides = {"seed": self.config.seed}
        if self.config.recipe.val_fraction is not None:
            overrides["val_fraction"] = self.config.recipe.val_fraction
        if self.config.recipe.test_fraction is not None:
            overrides["test_fraction"] = self.config.recipe.test_fraction
        manifest = ingest(self.config.data, workdir=self.run_dir, **overrides)
        sizes = manifest.split_sizes()
        if sizes["train"] == 0 or sizes["val"] == 0:
            raise ValueError(
                f"{manifest.source} gives {sizes['train']} training and {sizes['val']} validation "
                "images; training needs both: add images (a few per class at least) or change "
                "--val-fraction"
            )
        return manifest

    def _class_weight(self) -> dict[int, float] | None:
        return class_weights(self.manifest.split_labels("train"), self.config.recipe.class_weights)

    def _datasets(self):
        from pipelines import make_datasets
        from workbench.engine.strategy import shard_policy_name, with_sharding_policy

        ds = make_datasets(
            self.manifest,
            image_size=self.image_size,
            batch_size=self.global_batch,
            augment=self.config.augment,
            seed=self.config.seed,
            shard_policy=shard_policy_name(self.strategy),
        )
        self.shard = lambda d: with_sharding_policy(d, self.strategy)
        if self.replicas > 1:
            # A last global batch smaller than the replica count leaves a replica an empty batch,
            # which TensorFlow's CPU convolutions reject; skip that batch (fewer images than
            # replicas, reported in the phase events as `skipped_images`).
            sizes = self.manifest.split_sizes()
            ds.train = _skip_small_batches(ds.train, sizes["train"], self.global_batch, self.replicas)
            ds.val = _skip_small_batches(ds.val, sizes["val"], self.global_batch, self.replicas)
        return ds

    def _use_cache(self) -> bool:
        mode = self.config.recipe.cache_features
        return mode == "on" or (mode == "auto" and self.config.augment == "none")

    def _build_model(self):
        from workbench.models import build_model

        weights = self.config.weights
        if isinstance(weights, str) and weights.lower() == "none":
            weights = None
        model = build_model(
            self.config.variant,
            num_classes=len(self.manifest.classes),
            weights=weights,
            input_shape=(self.image_size, self.image_size, 3),
            dropout=self.config.recipe.dropout,
        )
        if weights is None or str(weights) == "imagenet":
            # A new head starts at zero (as in BiT, Kolesnikov et al. 2020): the first loss is ln(C).
            # The keras.applications initialiser (fan_out scaling, made for 1000 classes) gives a
            # few-class head weights of +-0.6 and first-epoch losses above 10 on pooled features.
            head = model.get_layer("predictions")
            for variable in head.weights:
                variable.assign(np.zeros(variable.shape, variable.dtype))
        return model

    def _set_trainable(self, phase: int) -> list[str]:
        """Freeze for `phase`; frozen blocks also stop their stochastic depth (a frozen block must
        compute what the cached features hold: Keras freezes BatchNorm's statistics with
        `trainable=False`, but a frozen Dropout still drops in training mode)."""
        import keras

        from workbench.models.surgery import block_of, freeze_backbone, unfreeze_top_blocks

        if phase == 1:
            freeze_backbone(self.model)
            unfrozen: list[str] = []
        else:
            unfrozen = unfreeze_top_blocks(self.model, self.config.recipe.unfreeze_blocks)
        if not hasattr(self, "_drop_rates"):
            self._drop_rates = {
                layer.name: layer.rate
                for layer in self.model.layers
                if isinstance(layer, keras.layers.Dropout) and block_of(layer.name) is not None
            }
        for layer in self.model.layers:
            if layer.name in self._drop_rates:
                layer.rate = self._drop_rates[layer.name] if block_of(layer.name) in unfrozen else 0.0
        return unfrozen

    def _restore_drop_rates(self) -> None:
        for name, rate in getattr(self, "_drop_rates", {}).items():
            self.model.get_layer(name).rate = rate

    # ------------------------------------------------------------------ phases
    def _optimizer(self, learning_rate: float, total_steps: int):
        import keras

        from workbench.engine.precision import wrap_optimizer

        warmup = int(self.config.recipe.warmup_fraction * total_steps)
        if warmup > 0:
            schedule = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=0.0,
                decay_steps=max(total_steps - warmup, 1),
                warmup_target=learning_rate,
                warmup_steps=warmup,
            )
        else:
            schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(total_steps, 1))
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=self.config.recipe.weight_decay)
        return wrap_optimizer(optimizer, self.policy)

    def _compile(self, model, learning_rate: float, epochs: int, steps: int):
        import keras

        with self.strategy.scope():
            optimizer = self._optimizer(learning_rate, epochs * steps)
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=self.config.recipe.label_smoothing),
                metrics=["accuracy"],
            )
        return optimizer

    def _steps(self, num_images: int) -> int:
        return max(1, _num_batches(num_images, self.global_batch, self.replicas))

    def _phase_event(self, phase: int, name: str, epochs: int, **extra):
        resumed = self.resume_dir is not None and self.state.phase == phase and self.state.epochs_done > 0
        self.writer.phase(
            phase=phase,
            name=name,
            epochs=epochs,
            start_epoch=self.state.epochs_done + 1 if resumed else 1,
            resumed=resumed,
            strategy=strategy_label(self.strategy),
            replicas=self.replicas,
            batch_size=self.config.batch_size,
            global_batch_size=self.global_batch,
            precision=self.policy,
            image_size=self.image_size,
            num_train=self.manifest.split_sizes()["train"],
            num_val=self.manifest.split_sizes()["val"],
            skipped_images=self._skipped(),
            **extra,
        )

    def _skipped(self) -> dict[str, int]:
        """Images left out per epoch by `_skip_small_batches` (0 on one replica)."""
        sizes = self.manifest.split_sizes()
        skipped = {}
        for split in ("train", "val"):
            n = sizes[split]
            if self.replicas == 1:
                skipped[split] = 0
            elif n < self.global_batch:
                skipped[split] = n % self.replicas
            else:
                last = n % self.global_batch
                skipped[split] = last if 0 < last < self.replicas else 0
        return skipped

    def _phase1(self) -> bool:
        from workbench.models.surgery import classifier_head

        config = self.config
        self._set_trainable(1)
        cached = self._use_cache()
        self._phase_event(1, "head (backbone frozen)", config.epochs, cached_features=cached)
        n_train = self.manifest.split_sizes()["train"]
        if cached:
            cache = self._cached_features()
            if cache is None:
                return True  # STOP during the feature pass
            from workbench.engine.features import feature_dataset

            train = feature_dataset(
                cache["train_x"], cache["train_y"], self.global_batch, shuffle=True, seed=config.seed
            )
            val = feature_dataset(cache["val_x"], cache["val_y"], self.global_batch, shuffle=False, seed=0)
            if self.replicas > 1:
                train = _skip_small_batches(train, len(cache["train_x"]), self.global_batch, self.replicas)
                val = _skip_small_batches(val, len(cache["val_x"]), self.global_batch, self.replicas)
            with self.strategy.scope():
                fit_model = classifier_head(self.model)
            train, val = self.shard(train), self.shard(val)
        else:
            train, val, fit_model = self.datasets.train, self.datasets.val, self.model
        return self._fit(1, fit_model, train, val, config.epochs, config.recipe.learning_rate, n_train)

    def _phase2(self) -> bool:
        config, state = self.config, self.state
        if state.phase == 1:
            # The phase-1 "last" files stay until phase 2 completes its first epoch.
            state.phase, state.epochs_done, state.phase_done, state.epochs_since_best = 2, 0, False, 0
            state.save(self.run_dir)
        if "weights" in self.best_holder:
            # Fine-tune from the best head, not the last one.
            self.model.set_weights(self.best_holder["weights"])
        blocks = self._set_trainable(2)
        self._phase_event(2, "fine-tune (top blocks unfrozen)", config.fine_tune_epochs, unfrozen_blocks=blocks)
        return self._fit(
            2,
            self.model,
            self.datasets.train,
            self.datasets.val,
            config.fine_tune_epochs,
            config.recipe.fine_tune_learning_rate,
            self.manifest.split_sizes()["train"],
        )

    def _fit(self, phase: int, fit_model, train, val, epochs: int, learning_rate: float, n_train: int) -> bool:
        """One phase; returns True when a STOP file ended it."""
        from workbench.engine.callbacks import (
            NonFiniteGuard,
            ProgressEvents,
            RunCheckpoint,
            RunSignals,
            StopFile,
            load_optimizer,
        )

        state = self.state
        steps = self._steps(n_train)
        n_val = self.manifest.split_sizes()["val"]
        train = _known_cardinality(train, _num_batches(n_train, self.global_batch, self.replicas))
        val = _known_cardinality(val, _num_batches(n_val, self.global_batch, self.replicas))
        optimizer = self._compile(fit_model, learning_rate, epochs, steps)
        initial_epoch = state.epochs_done if state.phase == phase else 0
        if initial_epoch > 0 and state.last_weights:
            ckpt = self.run_dir / CHECKPOINTS_DIR
            _load_weights(self.model, ckpt / state.last_weights)
            with self.strategy.scope():
                load_optimizer(optimizer, fit_model.trainable_variables, ckpt / state.last_optimizer)
        if initial_epoch >= epochs:
            return False
        signals = RunSignals()
        callbacks = [
            NonFiniteGuard(phase, signals),
            StopFile(self.run_dir, signals),
            ProgressEvents(
                self.writer,
                phase=phase,
                epochs=epochs,
                steps=steps,
                num_images=n_train,
                global_batch=self.global_batch,
                signals=signals,
            ),
            RunCheckpoint(
                run_dir=self.run_dir,
                state=state,
                model=self.model,
                optimizer=optimizer,
                patience=self.config.recipe.early_stopping_patience,
                signals=signals,
                best_holder=self.best_holder,
            ),
        ]
        from workbench.engine.strategy import keras_fit_fixes

        with keras_fit_fixes(fit_model, self.strategy):
            fit_model.fit(
                train,
                validation_data=val,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                class_weight=self.class_weight,
                shuffle=False,
                verbose=0,
            )
        if signals.diverged:
            if state.best_weights:
                kept = (
                    f"the last good checkpoints are kept in {self.run_dir / CHECKPOINTS_DIR} (best: "
                    f"val_accuracy {state.best_val_accuracy:.4f}, phase {state.best_phase} epoch "
                    f"{state.best_epoch})"
                )
            else:
                kept = "no epoch had completed, so there is no checkpoint"
            raise TrainingError(
                f"{signals.diverged}; training stopped and {kept}. Lower the learning rate "
                f"(--learning-rate / --fine-tune-learning-rate) or use --precision float32, then start a new run"
            )
        if signals.stopped:
            return True
        state.phase_done = True
        state.save(self.run_dir)
        return False

    def _cached_features(self) -> dict | None:
        from workbench.engine.features import extract_features, load_cache, save_cache
        from workbench.models.surgery import feature_extractor

        path = self.run_dir / CHECKPOINTS_DIR / "features.npz"
        key = {
            "variant": self.config.variant,
            "weights": str(self.config.weights),
            "image_size": self.image_size,
            "splits": self.manifest.split_sizes(),
            "seed": self.config.seed,
        }
        cache = load_cache(path, key)
        if cache is not None:
            return cache
        extractor = feature_extractor(self.model)
        sizes = self.manifest.split_sizes()
        total_images = sizes["train"] + sizes["val"]
        total_steps = sum(math.ceil(sizes[s] / self.global_batch) for s in ("train", "val"))
        start = time.perf_counter()
        progress = {"steps": 0, "images": 0}
        cache = {}
        for split in ("train", "val"):
            before = dict(progress)  # totals when this split's pass starts

            def on_batch(_step, _n, split=split, before=before):
                progress["steps"] = before["steps"] + _step
                progress["images"] = before["images"] + _n
                seen, elapsed = progress["images"], max(time.perf_counter() - start, 1e-9)
                # Epoch 0 of phase 1 is the single pass that computes the cached features.
                self.writer.batch(
                    phase=1,
                    epoch=0,
                    step=progress["steps"],
                    steps=total_steps,
                    loss=None,
                    accuracy=None,
                    images_per_s=seen / elapsed,
                    eta_s=(total_images - seen) * elapsed / seen,
                    stage="features",
                    split=split,
                )

            result = extract_features(
                extractor,
                self.datasets.plain(split),
                on_batch=on_batch,
                should_stop=lambda: stop_requested(self.run_dir),
            )
            if result is None:
                return None
            cache[f"{split}_x"], cache[f"{split}_y"] = result
        save_cache(path, key, cache)
        return cache

    # ------------------------------------------------------------------ end
    def _finish(self, stopped: bool) -> RunResult:
        state = self.state
        model_path = None
        self._restore_drop_rates()
        if "weights" in self.best_holder:
            self.model.set_weights(self.best_holder["weights"])
            model_path = self.run_dir / MODEL_FILE
            with atomic_path(model_path) as tmp:
                self.model.save(tmp)
        self.writer.done(
            run_dir=self.run_dir,
            best_val_accuracy=state.best_val_accuracy,
            model_path=model_path,
            stopped=stopped,
            best_phase=state.best_phase,
            best_epoch=state.best_epoch,
        )
        return RunResult(
            run_dir=self.run_dir,
            best_val_accuracy=state.best_val_accuracy,
            model_path=model_path,
            stopped=stopped,
            best_phase=state.best_phase,
            best_epoch=state.best_epoch,
            precision=self.policy,
            strategy=strategy_label(self.strategy),
            replicas=self.replicas,
            global_batch_size=self.global_batch,
            cached_features=self._use_cache(),
            chief=self.chief,
        )


def _load_weights(model, path: Path) -> None:
    """Model weights from a checkpoint. Keras also stores the optimizer of a compiled model in
    `.weights.h5` and warns when the loading model's optimizer differs; the engine restores the
    optimizer from its own `.optimizer.npz`, so that warning is noise here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _known_cardinality(dataset, batches: int):
    """Tell tf.data how many batches a split has when it cannot tell itself (Keras otherwise warns
    that the input "ran out of data" at the end of every first epoch)."""
    import tensorflow as tf

    if int(dataset.cardinality()) != int(tf.data.UNKNOWN_CARDINALITY):
        return dataset
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def _num_batches(num_images: int, global_batch: int, replicas: int) -> int:
    """Batches per epoch of a split after `_skip_small_batches`."""
    if num_images < global_batch:
        return 1 if num_images >= replicas else 0
    last = num_images % global_batch
    return num_images // global_batch + (1 if last >= replicas else 0)


def _skip_small_batches(dataset, num_images: int, global_batch: int, replicas: int):
    """Batches every replica can share: drop a last batch smaller than the replica count, and
    when the whole split is smaller than one global batch, batch it at a multiple of the replica
    count (Keras reduces the first batch across replicas and fails on uneven shares)."""
    if num_images < global_batch:
        usable = num_images - num_images % replicas
        return dataset.unbatch().batch(usable) if usable else dataset.take(0)
    last = num_images % global_batch
    if 0 < last < replicas:
        return dataset.take(num_images // global_batch)
    return dataset


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
