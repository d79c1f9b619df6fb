"""The learning-rate finder (Smith 2015, "Cyclical learning rates"; fastai's `lr_find`) for phase 1.

Phase 1 trains the head on a frozen backbone, so its loss depends only on the pooled features: they are
computed once (`workbench.engine.features`, cached in the finder's folder) and the sweep is a few hundred
Dense steps, seconds even on 2 cores. The head starts at zero, as in the recipe; the learning rate grows
exponentially from `start_lr` to `end_lr`, one batch per step, and the sweep stops early once the smoothed
loss has diverged. The suggestion is the steepest descent of the smoothed loss before its minimum; the
minimum's rate / 10 is reported beside it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import numpy as np

from workbench.config_fields import Config, option
from workbench.engine.config import DATA_HELP, SAMPLE_IMAGE_SIZE

SMOOTHING = 0.98  # exponential average of the loss with bias correction, as fastai's
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its minimum


@dataclasses.dataclass
class LRFindConfig(Config):
    """One learning-rate sweep over the phase-1 head."""

    data: str | None = option(None, DATA_HELP)
    variant: str = option("lite0", "EfficientNet variant whose frozen backbone gives the features")
    weights: str | None = option("imagenet", "backbone weights: imagenet, none (random) or a weights file")
    image_size: int | None = option(None, "input resolution in pixels; empty = the variant's (160 for the sample)")
    batch_size: int = option(32, "images per step of the sweep")
    start_lr: float = option(1e-5, "first learning rate of the sweep")
    end_lr: float = option(10.0, "last learning rate of the sweep (it stops earlier once the loss diverges)")
    steps: int = option(100, "learning rates tried, spaced exponentially")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy (the recipe's default)")
    seed: int = option(0, "seed of the split and the batch order")
    out: str = option("runs", "folder for the finder's lr-find-<id>/ directory (features, plot, JSON)")

    def validate(self) -> LRFindConfig:
        if not 0 < self.start_lr < self.end_lr:
            raise ValueError(f"start_lr={self.start_lr:g} and end_lr={self.end_lr:g}: need 0 < --start-lr < --end-lr")
        if self.steps < 10:
            raise ValueError(f"steps={self.steps}: the sweep needs at least 10 steps to show a curve; use --steps 100")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be at least 1")
        return self


@dataclasses.dataclass
class LRFindResult:
    directory: Path
    learning_rates: list[float]
    losses: list[float]  # raw loss of each step
    smoothed: list[float]
    suggestion: float  # steepest descent of the smoothed loss
    min_loss_lr: float  # where the smoothed loss is lowest (use about a tenth of it)
    plot: Path
    table: Path
    note: str | None = None  # why the suggestion should not be trusted (the loss never fell)


def sweep_rates(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` learning rates from `start` to `end`, evenly spaced on a log scale."""
    return np.geomspace(start, end, steps)


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average of `losses` (the first values are not pulled to 0)."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def suggest(learning_rates: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(steepest-descent rate, minimum-loss rate) of a sweep's smoothed loss.

    The steepest descent is the most negative slope of loss against log(rate), searched before the minimum
    (the slope after it is the divergence); with fewer than three points before the minimum, the minimum's
    rate / 10 is the suggestion.
    """
    lrs, losses = np.asarray(learning_rates, float), np.asarray(smoothed, float)
    if len(lrs) != len(losses) or len(lrs) < 2:
        raise ValueError("suggest needs one smoothed loss per learning rate, two at least")
    lowest = int(np.argmin(losses))
    if lowest < 3:
        return float(lrs[lowest] / 10), float(lrs[lowest])
    slopes = np.gradient(losses[: lowest + 1], np.log(lrs[: lowest + 1]))
    return float(lrs[int(np.argmin(slopes))]), float(lrs[lowest])


def run_sweep(head, features: np.ndarray, labels: np.ndarray, config: LRFindConfig) -> tuple[list, list]:
    """Train `head` one batch per learning rate of the sweep; (rates tried, raw losses). Stops at divergence."""
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=config.start_lr)
    head.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing))
    rng = np.random.default_rng(config.seed)
    order = np.empty(0, int)
    rates, losses = [], []
    for lr in sweep_rates(config.start_lr, config.end_lr, config.steps):
        if len(order) < config.batch_size:  # a new pass over the shuffled features
            order = np.concatenate([order, rng.permutation(len(features))])
        batch, order = order[: config.batch_size], order[config.batch_size :]
        optimizer.learning_rate.assign(float(lr))
        loss = float(head.train_on_batch(features[batch], labels[batch]))
        if not math.isfinite(loss):
            break
        rates.append(float(lr))
        losses.append(loss)
        smoothed = smooth(losses)
        if smoothed[-1] > DIVERGED * min(smoothed):
            break
    return rates, losses


def lr_find(config: LRFindConfig) -> LRFindResult:
    """Ingest the data, cache the train split's pooled features, sweep, plot; see the module docstring."""
    import keras

    config.validate()
    from workbench.engine.heads import zero_head
    from workbench.models.surgery import classifier_head

    directory = _new_dir(config)
    manifest = _data(config, directory)
    size = config.image_size or (SAMPLE_IMAGE_SIZE if config.data is None else _resolution(config.variant))
    keras.utils.set_random_seed(config.seed)
    model = _model(config, len(manifest.classes), size)
    features, labels = _features(config, directory, manifest, model, size)
    zero_head(model)  # the recipe's phase-1 start (BiT's zero head)
    head = classifier_head(model)
    rates, losses = run_sweep(head, features, labels, config)
    if len(rates) < 2:
        raise ValueError(
            f"the loss diverged at once (start_lr {config.start_lr:g}); lower --start-lr, e.g. {config.start_lr / 100:g}"
        )
    smoothed = smooth(losses)
    suggestion, min_loss_lr = suggest(rates, smoothed)
    note = flat_note(smoothed)
    table = directory / "lr_find.json"
    from pipelines.files import atomic_write_json

    atomic_write_json(
        table,
        {
            "config": config.to_dict(),
            "learning_rates": rates,
            "losses": losses,
            "smoothed": smoothed,
            "suggestion": suggestion,
            "min_loss_lr": min_loss_lr,
            "note": note,
        },
    )
    plot = plot_sweep(rates, losses, smoothed, suggestion, directory / "lr_find.png")
    return LRFindResult(directory, rates, losses, smoothed, suggestion, min_loss_lr, plot, table, note)


def flat_note(smoothed: list[float], drop: float = 0.02) -> str | None:
    """A note when the smoothed loss never fell by `drop` (2 %) of its start: no rate made the head learn."""
    if min(smoothed) > (1 - drop) * smoothed[0]:
        return (
            f"the loss barely fell during the sweep ({smoothed[0]:.3f} at best to {min(smoothed):.3f}), so the "
            "suggestion is unreliable: the features may not separate the classes (random --weights?) or the "
            "sweep stopped too soon (raise --end-lr or --steps)"
        )
    return None


def _new_dir(config: LRFindConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() else "_" for c in config.variant)
    base = Path(config.out) / f"lr-find-{stamp}-{safe}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def _data(config: LRFindConfig, directory: Path):
    from pipelines import ingest

    manifest = ingest(config.data, workdir=directory, seed=config.seed)
    if manifest.multi_label:
        raise ValueError(
            f"{manifest.source} is multi-label data; the finder sweeps a softmax head's cross-entropy: use it on a "
            "folder of class folders, or train with the recipe's learning rates"
        )
    if manifest.split_sizes()["train"] == 0:
        raise ValueError(f"{manifest.source} has no training images; the finder needs a few per class at least")
    return manifest


def _features(config: LRFindConfig, directory: Path, manifest, model, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and one-hot labels of the train split, cached in `directory/features.npz` by the
    engine's cache code (the same key fields as a run's phase-1 cache)."""
    from pipelines import make_datasets
    from workbench.engine.features import extract_features, load_cache, save_cache
    from workbench.models.surgery import feature_extractor

    key = {"variant": config.variant, "weights": str(config.weights), "image_size": size, "seed": config.seed}
    path = directory / "features.npz"
    cache = load_cache(path, key)
    if cache is None:
        datasets = make_datasets(manifest, image_size=size, batch_size=config.batch_size, augment="none")
        x, y = extract_features(feature_extractor(model), datasets.plain("train"))
        cache = {"train_x": x, "train_y": y}
        save_cache(path, key, cache)
    return cache["train_x"], cache["train_y"]


def _resolution(variant: str) -> int:
    from workbench.models import get_variant

    return get_variant(variant).resolution


def _model(config: LRFindConfig, num_classes: int, size: int):
    from workbench.models import build_model

    weights = None if str(config.weights).lower() == "none" else config.weights
    return build_model(config.variant, num_classes=num_classes, weights=weights, input_shape=(size, size, 3))


def plot_sweep(rates: list[float], losses: list[float], smoothed: list[float], suggestion: float, path: Path) -> Path:
    """Loss against learning rate (log scale), raw and smoothed, with the suggestion marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipelines.files import atomic_path

    figure = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(rates, losses, color="#c0c0c0", linewidth=1, label="loss per step")
    axes.plot(rates, smoothed, color="#4c72b0", linewidth=2, label="smoothed")
    axes.axvline(suggestion, color="#c44e52", linestyle="--", label=f"suggestion {suggestion:.2g}")
    index = int(np.argmin(np.abs(np.log(rates) - math.log(suggestion))))
    axes.plot([suggestion], [smoothed[index]], "o", color="#c44e52")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("Learning-rate finder (phase 1: head on cached features)")
    axes.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
