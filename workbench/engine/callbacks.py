"""Keras callbacks that turn a `fit` into a run: progress events, the STOP file (and SIGTERM, which
writes it), the non-finite-loss guard, and checkpoints with early stopping that survive a resume.

`keras.callbacks.EarlyStopping` and `ModelCheckpoint` keep their state in memory only and reset
it in `on_train_begin`, so a resumed run would forget its best score and patience; `RunCheckpoint`
keeps both in `TrainState`, which is saved with every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipelines.files import atomic_path, atomic_write_json
from workbench.engine.rundir import CHECKPOINTS_DIR, STATE_FILE, request_stop, stop_requested


@dataclasses.dataclass
class TrainState:
    """Where a run stands; `checkpoints/state.json` after every completed epoch."""

    phase: int = 1  # the phase in progress (or finished last)
    epochs_done: int = 0  # completed epochs of `phase`
    phase_done: bool = False  # `phase` ran to its end (all epochs or early stop)
    best_val_accuracy: float | None = None
    best_phase: int | None = None
    best_epoch: int | None = None
    epochs_since_best: int = 0  # early-stopping counter within the current phase
    last_weights: str | None = None  # file names in checkpoints/
    last_optimizer: str | None = None
    best_weights: str | None = None

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / CHECKPOINTS_DIR / STATE_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> TrainState | None:
        path = run_dir / CHECKPOINTS_DIR / STATE_FILE
        if not path.exists():
            return None
        values = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclasses.dataclass
class RunSignals:
    """What the callbacks tell the recipe after `fit` returns."""

    stopped: bool = False  # a STOP file ended the phase
    early_stopped: bool = False
    diverged: str | None = None  # message when the loss became NaN/Inf


def load_weights(model, path: Path) -> None:
    """Model weights from a checkpoint. Keras also stores the optimizer of a compiled model in
    `.weights.h5` and warns when the loading model's optimizer differs; the engine restores the
    optimizer from its own `.optimizer.npz`, so that warning is noise here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def save_optimizer(optimizer, path: Path) -> None:
    values = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **values)


def load_optimizer(optimizer, trainable_variables, path: Path) -> None:
    """Restore optimizer slots saved by `save_optimizer` (the optimizer is built first)."""
    if not optimizer.built:
        optimizer.build(trainable_variables)
    with np.load(path) as data:
        values = [data[k] for k in sorted(data.files)]
    if len(values) != len(optimizer.variables):
        raise ValueError(
            f"optimizer checkpoint {path} holds {len(values)} variables, the optimizer has "
            f"{len(optimizer.variables)}; the run's config changed since it was saved"
        )
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)


class ProgressEvents(keras.callbacks.Callback):
    """Writes `batch` events (at most every `min_interval_s`, plus each epoch's first and last
    step) and `epoch` events with images/s and the phase's ETA."""

    def __init__(
        self,
        writer,
        *,
        phase: int,
        epochs: int,
        steps: int,
        num_images: int,
        global_batch: int,
        signals: RunSignals,
        min_interval_s: float = 0.25,
    ):
        super().__init__()
        self.signals = signals
        self.writer, self.phase, self.epochs, self.steps = writer, phase, epochs, steps
        self.num_images, self.global_batch, self.min_interval_s = num_images, global_batch, min_interval_s
        self._last_emit = 0.0
        self._seconds_per_step: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step_start = time.perf_counter()

    def _images(self, steps_done: int) -> int:
        return min(steps_done * self.global_batch, self.num_images)

    def _eta(self, steps_done: int) -> float | None:
        if self._seconds_per_step is None:
            return None
        remaining = (self.steps - steps_done) + (self.epochs - self._epoch - 1) * self.steps
        return max(remaining, 0) * self._seconds_per_step

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        step = batch + 1
        # An exponential average of the step time: the first step carries graph tracing.
        step_time = now - self._step_start
        self._step_start = now
        if self._seconds_per_step is None:
            self._seconds_per_step = step_time
        else:
            self._seconds_per_step = 0.9 * self._seconds_per_step + 0.1 * step_time
        if step in (1, self.steps) or now - self._last_emit >= self.min_interval_s:
            self._last_emit = now
            elapsed = max(now - self._epoch_start, 1e-9)
            self.writer.batch(
                phase=self.phase,
                epoch=self._epoch + 1,
                step=step,
                steps=self.steps,
                loss=_float(logs.get("loss")),
                accuracy=_float(logs.get("accuracy")),
                images_per_s=self._images(step) / elapsed,
                eta_s=self._eta(step),
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.signals.stopped or self.signals.diverged:
            return  # an epoch cut short is not reported as one
        logs = logs or {}
        elapsed = max(time.perf_counter() - self._epoch_start, 1e-9)
        self.writer.epoch(
            phase=self.phase,
            epoch=epoch + 1,
            loss=_float(logs.get("loss")),
            accuracy=_float(logs.get("accuracy")),
            val_loss=_float(logs.get("val_loss")),
            val_accuracy=_float(logs.get("val_accuracy")),
            images_per_s=self.num_images / elapsed,
            eta_s=self._eta(self.steps),
            learning_rate=_learning_rate(self.model),
        )


class StopFile(keras.callbacks.Callback):
    """Stops training after the current batch once `run_dir/STOP` exists."""

    def __init__(self, run_dir: Path, signals: RunSignals):
        super().__init__()
        self.run_dir, self.signals = run_dir, signals

    def on_train_batch_end(self, batch, logs=None):
        if stop_requested(self.run_dir):
            self.signals.stopped = True
            self.model.stop_training = True


class BudgetGuard(keras.callbacks.Callback):
    """Ends the phase after an epoch when another epoch as long as the last would pass `deadline`
    (a `time.perf_counter()` value; `--time-budget`). The epoch is complete and checkpointed first, so
    nothing is lost and the phase never stops in the middle of an epoch."""

    def __init__(self, deadline: float, writer, phase: int, epochs: int):
        super().__init__()
        self.deadline, self.writer, self.phase, self.epochs = deadline, writer, phase, epochs
        self.ended_phase = False  # True once the budget ended the phase early
        self._began = time.perf_counter()
        self._first: int | None = None

    def on_train_begin(self, logs=None):
        self._first = None  # a progressive phase calls `fit` once per stage, and each one traces anew

    def on_epoch_begin(self, epoch, logs=None):
        self._began = time.perf_counter()
        if self._first is None:
            self._first = epoch

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        seconds = now - self._began
        # The first epoch of a fit also pays for tracing the graphs, so it predicts nothing about the next;
        # after it, the phase ends only once the deadline has passed.
        expected = 0.0 if epoch == self._first else seconds
        if epoch + 1 >= self.epochs or now + expected <= self.deadline:
            return
        self.model.stop_training = True
        self.ended_phase = True
        why = (
            "the budget is spent" if now > self.deadline else f"another {seconds:.0f} s epoch would overrun the budget"
        )
        self.writer.emit(
            "budget",
            phase=self.phase,
            epoch=epoch + 1,
            message=f"phase {self.phase} ends after epoch {epoch + 1} of {self.epochs}: {why} "
            "(the best epoch so far is kept)",
        )


@dataclasses.dataclass
class Termination:
    """Whether SIGTERM asked the run to stop (set by `stop_on_sigterm`)."""

    received: bool = False


@contextmanager
def stop_on_sigterm(run_dir: Path) -> Iterator[Termination]:
    """While training, SIGTERM (what `docker stop`, systemd and Kubernetes send) is a clean stop.

    The handler writes the STOP file, so every place that honours STOP (the `StopFile` callback, the
    feature pass) stops after its current batch, and the run ends through its normal path: a `done`
    event with `stopped`, consistent checkpoints, the lock released, resumable (issue 11, B5). A second
    SIGTERM raises KeyboardInterrupt, as Ctrl-C does, for a caller that cannot wait for the batch.
    The previous handler is restored on exit. Python runs signal handlers in the main thread only, so
    elsewhere (a run started from a worker thread) nothing is installed and SIGTERM keeps its meaning.
    """
    termination = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return

    def handle(signum, frame):
        if termination.received:
            raise KeyboardInterrupt(f"a second SIGTERM interrupted the run in {run_dir}")
        termination.received = True
        request_stop(run_dir)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops at the first NaN/Inf loss and records where (the checkpoint of the last completed
    epoch is left untouched). `keras.callbacks.TerminateOnNaN` stops too, but says nothing
    the run can report."""

    def __init__(self, phase: int, signals: RunSignals):
        super().__init__()
        self.phase, self.signals = phase, signals

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = _float((logs or {}).get("loss"))
        if loss is not None and not math.isfinite(loss):
            self.signals.diverged = (
                f"the training loss became {loss} in phase {self.phase}, epoch {self._epoch + 1}, step {batch + 1}"
            )
            self.model.stop_training = True


class RunCheckpoint(keras.callbacks.Callback):
    """After each completed epoch: keep the best weights (by val_accuracy, in memory as
    `best_weights` and in `checkpoints/best.weights.h5`), save the last weights and optimizer state
    for resume, update `TrainState`, and stop the phase after `patience` epochs without improvement.

    `model` is the full model (whose weights are saved); the model being fit may be the head
    alone (phase 1 on cached features), which shares its weights. `best_weights` starts as the
    best of earlier phases (None when there is none yet); read it after `fit`.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        state: TrainState,
        model: keras.Model,
        optimizer,
        patience: int,
        signals: RunSignals,
        best_weights: list[np.ndarray] | None = None,
    ):
        super().__init__()
        self.run_dir, self.state, self.full_model, self.optimizer = run_dir, state, model, optimizer
        self.patience, self.signals, self.best_weights = patience, signals, best_weights
        self.ckpt_dir = run_dir / CHECKPOINTS_DIR

    def on_epoch_end(self, epoch, logs=None):
        if self.signals.diverged:
            return  # never overwrite a good checkpoint with diverged weights
        if self.signals.stopped:
            return  # a partial epoch is not a completed one
        logs = logs or {}
        state = self.state
        val_accuracy = _float(logs.get("val_accuracy"))
        improved = val_accuracy is not None and (
            state.best_val_accuracy is None or val_accuracy > state.best_val_accuracy
        )
        if improved:
            state.best_val_accuracy, state.best_phase, state.best_epoch = val_accuracy, state.phase, epoch + 1
            state.epochs_since_best = 0
            self.best_weights = self.full_model.get_weights()
            state.best_weights = "best.weights.h5"
            with atomic_path(self.ckpt_dir / state.best_weights) as tmp:
                self.full_model.save_weights(tmp)
        else:
            state.epochs_since_best += 1
        state.epochs_done = epoch + 1
        tag = f"p{state.phase}e{epoch + 1}"
        previous = (state.last_weights, state.last_optimizer)
        state.last_weights, state.last_optimizer = f"last-{tag}.weights.h5", f"last-{tag}.optimizer.npz"
        with atomic_path(self.ckpt_dir / state.last_weights) as tmp:
            self.full_model.save_weights(tmp)
        save_optimizer(self.optimizer, self.ckpt_dir / state.last_optimizer)
        # state.json is written last: it names only files that are complete.
        state.save(self.run_dir)
        for name in previous:
            if name and name not in (state.last_weights, state.last_optimizer):
                (self.ckpt_dir / name).unlink(missing_ok=True)
        if self.patience and state.epochs_since_best >= self.patience:
            self.signals.early_stopped = True
            self.model.stop_training = True


def _learning_rate(model) -> float | None:
    """The optimizer's learning rate now (the schedule's value at the current step), or None."""
    optimizer = getattr(model, "optimizer", None)
    try:
        return _float(optimizer.learning_rate)
    except AttributeError:  # not compiled, or an optimizer without one
        return None


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
