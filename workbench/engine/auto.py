"""The automatic recipe (`--recipe auto`, the default): choose what the user left empty, from the data, the
measured speed of this machine and the time budget, and say why, one line per decision.

The rules are pure functions of three facts (`DataFacts`, `Speed`, the budget), so they are tested without
training anything. Their constants come from measurements recorded in `benchmarks/bench_auto_recipe.py`
(two data sets unlike each other: CIFAR-10's 32 px photos and Fashion-MNIST's 28 px grayscale clothes),
not from guesses; the README's "Automatic recipe" section gives the figures.

What `auto` decides, in order (an option the user gave is never touched):

1. `image_size`: small images gain nothing from being upscaled to the variant's full resolution, which costs
   compute quadratically; `auto` stops at about 5x their size (CIFAR's 32 px -> 160 px).
2. phase 1 (`epochs`, `learning_rate`, `augment`): on cached backbone features an epoch costs milliseconds, so
   the head gets enough steps to converge whatever the data size.
3. phase 2 (`unfreeze_blocks`, `fine_tune_epochs`, `fine_tune_learning_rate`): the deepest fine-tune whose
   epochs fit the budget, estimated from the measured forward speed (`Speed`) and the measured cost of a
   phase-2 step relative to it (`TRAIN_COST`, `VAL_COST`).
4. `early_stopping_patience`: long enough for the cosine schedule to reach its low-rate epochs.

Phase 2 is planned twice: once before training (so the plan can be shown), and again when phase 2 starts, from
the time really left (`replan_fine_tune`): the feature pass, the head and the machine's load are then measured,
not estimated. During phase 2, `BudgetGuard` (`workbench.engine.callbacks`) ends it at an epoch boundary if the
measured epoch times show the budget would be overrun.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from workbench.engine.config import DEFAULT_BUDGET_MINUTES

# What one phase-2 image costs, in forward passes of the whole network, by blocks unfrozen: measured on Lite0
# at 128 and 224 px on 2 CPU cores (`python benchmarks/bench_auto_recipe.py --measure-cost`; the larger of the
# two). By default the frozen blocks' output is computed once per phase (`cache_features auto`), so a step runs
# only the unfrozen top: a training step (TRAIN_COST) and, for validation, its inference (VAL_COST). With pixel
# augmentation every step runs the whole network (the *_IMAGES tables).
TRAIN_COST = {1: 0.08, 2: 0.21, 3: 0.31, 4: 0.44, 6: 0.68, 8: 1.0}
VAL_COST = {1: 0.03, 2: 0.07, 3: 0.09, 4: 0.11, 6: 0.27, 8: 0.31}
TRAIN_COST_IMAGES = {1: 1.5, 2: 1.5, 3: 1.7, 4: 2.0, 6: 2.2, 8: 3.0}
VAL_COST_IMAGES = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 6: 1.0, 8: 1.0}
# Seconds beyond the arithmetic, measured on Lite0 at 224 px on 2 CPU cores (bench_auto_recipe, Fashion-MNIST):
# a phase's tracing of its training graph (~1 s for the head, 4-5 s for phase 2); a checkpoint and the callbacks
# per epoch (0.4 s per head epoch, ~0.8 s per phase-2 epoch).
PHASE_OVERHEAD_SECONDS = 8.0
HEAD_EPOCH_SECONDS, FINE_TUNE_EPOCH_SECONDS = 0.4, 1.0
# Without --time-budget: about what the naive keras.io loop spends training (5 head epochs and 2 fine-tuning
# epochs on images at the variant's resolution, decoding included: 76 s on Fashion-MNIST, 12.9 times what
# `measure_speed` predicts for one pass over the data), plus evaluation and export, at most 10 minutes.
# `auto` spends that time better.
DEFAULT_PASSES, DEFAULT_MAX_SECONDS = 12, 60.0 * DEFAULT_BUDGET_MINUTES
# Depths tried, deepest first. Six blocks was the measured sweet spot on both data sets: three (the fixed
# recipe) left 3-5 points on the table out of ImageNet's domain, and more cost time without gaining.
DEPTHS = (6, 4, 3, 2, 1)
# Phase 2 epochs: at least MIN (a cosine schedule needs a few to anneal), at most MAX (the gain flattens).
MIN_FINE_TUNE_EPOCHS, MAX_FINE_TUNE_EPOCHS = 3, 12
# Phase-2 peak learning rate for 4+ unfrozen blocks (the fixed recipe's 1e-4 moved them too little); shallower
# fine-tunes keep 1e-4.
DEEP_FINE_TUNE_LR, SHALLOW_FINE_TUNE_LR = 3e-4, 1e-4
# Phase 1: enough optimizer steps for the head to converge on cached features, in 10..60 epochs.
HEAD_STEPS, HEAD_EPOCHS = 400, (10, 60)
HEAD_LR = 1e-3
# The lowest resolution `auto` tries when the budget cannot pay for the variant's own.
MIN_RESOLUTION = 128
# Of the budget, kept for evaluation and export after training: a fixed part (the SavedModel export, 6.4 s, and the
# report's plots, for Lite0 on 2 cores) plus forward passes over the test split; and a margin for what the
# estimates cannot see.
FINISH_SECONDS, BUDGET_MARGIN = 10.0, 0.9


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the rules need to know about the data (from the run's manifest)."""

    train_images: int
    val_images: int
    test_images: int
    classes: int
    median_side: int  # median over the training images of the shorter side, in pixels

    @classmethod
    def of(cls, manifest) -> DataFacts:
        sizes = manifest.split_sizes()
        sides = sorted(min(r.width, r.height) for r in manifest.split_records("train")) or [0]
        return cls(
            train_images=sizes["train"],
            val_images=sizes["val"],
            test_images=sizes.get("test", 0),
            classes=len(manifest.classes),
            median_side=sides[len(sides) // 2],
        )


@dataclasses.dataclass(frozen=True)
class Speed:
    """Measured inference throughput of the variant at one resolution; other resolutions scale with pixels
    (the convolutions' cost does; measured within 15% from 128 to 224 px)."""

    resolution: int
    forward_images_per_s: float

    def forward_seconds(self, images: int, resolution: int) -> float:
        return images / self.forward_images_per_s * (resolution / self.resolution) ** 2


@dataclasses.dataclass(frozen=True)
class Decision:
    """One choice of the automatic recipe: the option, its value, and why."""

    path: str
    value: Any
    reason: str

    def line(self) -> str:
        return f"{self.path} = {self.value}: {self.reason}"


def choose_image_size(
    facts: DataFacts, variant_resolution: int, speed: Speed | None = None, budget_seconds: float | None = None
) -> Decision:
    """The variant's own resolution, at which its ImageNet features were learnt, even for small images: on both
    benchmark sets (CIFAR's 32 px, Fashion-MNIST's 28 px) upscaling to it beat stopping at 4-5x their size by
    several points. A lower one only when the budget cannot pay for a deep fine-tune at the variant's own:
    the largest multiple of 32 (at least MIN_RESOLUTION) whose phase 2 fits MIN_FINE_TUNE_EPOCHS."""
    own = Decision(
        "image_size",
        variant_resolution,
        f"the variant's own resolution, where its pretrained features work best (images are {facts.median_side} px)",
    )
    if speed is None or budget_seconds is None:
        return own
    for size in range(variant_resolution, MIN_RESOLUTION - 1, -32):
        left = budget_seconds - head_seconds(facts, speed, size) - finish_seconds(facts, speed, size)
        epochs = epochs_that_fit(facts, speed, size, left, DEPTHS[0])
        if epochs >= MIN_FINE_TUNE_EPOCHS:
            if size == variant_resolution:
                return own
            return Decision(
                "image_size",
                size,
                f"the largest resolution at which a deep phase 2 fits the budget ({epochs} epochs; "
                f"{variant_resolution} px would fit fewer than {MIN_FINE_TUNE_EPOCHS})",
            )
    return Decision(
        "image_size",
        MIN_RESOLUTION,
        "the smallest resolution tried: even at it a deep phase 2 does not fit the budget",
    )


def head_epochs(facts: DataFacts, batch_size: int) -> int:
    """Epochs that give the head about HEAD_STEPS optimizer steps, within HEAD_EPOCHS."""
    low, high = HEAD_EPOCHS
    return min(high, max(low, math.ceil(HEAD_STEPS / max(1, math.ceil(facts.train_images / batch_size)))))


def choose_head(facts: DataFacts, batch_size: int) -> list[Decision]:
    """Phase 1 on cached features: epochs for about HEAD_STEPS optimizer steps, no pixel augmentation."""
    steps_per_epoch = max(1, math.ceil(facts.train_images / batch_size))
    epochs = head_epochs(facts, batch_size)
    return [
        Decision(
            "augment",
            "none",
            "the head trains on backbone features computed once (epochs cost milliseconds); pixel augmentation "
            "would recompute them every epoch, and measured no better",
        ),
        Decision(
            "epochs", epochs, f"{steps_per_epoch} steps per epoch; {epochs} epochs give the head ~{HEAD_STEPS} steps"
        ),
        Decision("recipe.learning_rate", HEAD_LR, "AdamW's usual rate for a new linear head"),
    ]


def fine_tune_epoch_seconds(
    facts: DataFacts, speed: Speed, resolution: int, depth: int, *, cached: bool = True
) -> float:
    """Estimated seconds of one phase-2 epoch: training steps on the train split, inference on val."""
    train_cost, val_cost = (TRAIN_COST, VAL_COST) if cached else (TRAIN_COST_IMAGES, VAL_COST_IMAGES)
    known = max((d for d in train_cost if d <= depth), default=min(train_cost))
    train = train_cost[known] * speed.forward_seconds(facts.train_images, resolution)
    return FINE_TUNE_EPOCH_SECONDS + train + val_cost[known] * speed.forward_seconds(facts.val_images, resolution)


def fine_tune_setup_seconds(facts: DataFacts, speed: Speed, resolution: int, *, cached: bool = True) -> float:
    """Estimated seconds phase 2 pays once: tracing, and the frozen blocks' output of both splits (at most
    one forward pass) when it is cached."""
    passes = speed.forward_seconds(facts.train_images + facts.val_images, resolution) if cached else 0.0
    return PHASE_OVERHEAD_SECONDS + passes


def head_seconds(facts: DataFacts, speed: Speed, resolution: int, epochs: int | None = None) -> float:
    """Estimated seconds of phase 1: the feature pass over both splits, tracing, and its (cheap) epochs."""
    epochs = epochs if epochs is not None else head_epochs(facts, 32)
    passes = speed.forward_seconds(facts.train_images + facts.val_images, resolution)
    return PHASE_OVERHEAD_SECONDS + passes + epochs * HEAD_EPOCH_SECONDS


def epochs_that_fit(
    facts: DataFacts, speed: Speed, resolution: int, seconds_left: float, depth: int, *, cached: bool = True
) -> int:
    """Phase-2 epochs at `depth` that fit `seconds_left` (after the phase's one-off costs and the margin)."""
    usable = seconds_left * BUDGET_MARGIN - fine_tune_setup_seconds(facts, speed, resolution, cached=cached)
    return max(0, int(usable // fine_tune_epoch_seconds(facts, speed, resolution, depth, cached=cached)))


def finish_seconds(facts: DataFacts, speed: Speed, resolution: int) -> float:
    """Estimated seconds after training: evaluation on the test split, then the export."""
    return FINISH_SECONDS + speed.forward_seconds(facts.test_images, resolution)


def default_budget(facts: DataFacts, speed: Speed, variant_resolution: int) -> Decision:
    """The budget `auto` plans for when the user gave none (see DEFAULT_PASSES)."""
    passes = DEFAULT_PASSES * speed.forward_seconds(facts.train_images + facts.val_images, variant_resolution)
    seconds = min(DEFAULT_MAX_SECONDS, passes + finish_seconds(facts, speed, variant_resolution))
    capped = " (the cap)" if seconds == DEFAULT_MAX_SECONDS else ""
    return Decision(
        "time_budget",
        f"{seconds:.0f}s",
        f"about what the naive keras.io loop (5 + 2 epochs at {variant_resolution} px) would take on this "
        f"machine, plus evaluation and export, at most {DEFAULT_MAX_SECONDS / 60:.0f} minutes{capped}; "
        "--time-budget sets it",
    )


def choose_fine_tune(
    facts: DataFacts,
    speed: Speed,
    resolution: int,
    seconds_left: float,
    depths: Sequence[int] = DEPTHS,
    *,
    cached: bool = True,
) -> list[Decision]:
    """The deepest phase 2 that fits `seconds_left` with at least MIN_FINE_TUNE_EPOCHS epochs (at most MAX);
    failing that, the shallowest with as many epochs as fit; none at all when not even one epoch fits."""
    per_epoch = {d: fine_tune_epoch_seconds(facts, speed, resolution, d, cached=cached) for d in depths}
    fits = {d: epochs_that_fit(facts, speed, resolution, seconds_left, d, cached=cached) for d in depths}
    depth = next((d for d in depths if fits[d] >= MIN_FINE_TUNE_EPOCHS), depths[-1])
    epochs = min(MAX_FINE_TUNE_EPOCHS, fits[depth])
    budget = f"~{per_epoch[depth]:.0f} s per epoch estimated from the measured speed, {seconds_left:.0f} s left"
    rate = DEEP_FINE_TUNE_LR if depth >= 4 else SHALLOW_FINE_TUNE_LR
    if epochs < 1:  # phase 2 is skipped, unless the user asked for its epochs: then the cheapest one
        return [
            Decision("fine_tune_epochs", 0, f"not one phase-2 epoch fits ({budget}); the head alone is trained"),
            Decision("recipe.unfreeze_blocks", depth, "the shallowest, should phase 2 run at all"),
            Decision("recipe.fine_tune_learning_rate", rate, f"a shallow fine-tune of {depth} block(s)"),
        ]
    why_depth = "the deepest fine-tune measured to pay off" if depth == depths[0] else "the deepest that fits"
    return [
        Decision("recipe.unfreeze_blocks", depth, f"{why_depth} ({budget})"),
        Decision(
            "fine_tune_epochs",
            epochs,
            f"{'the most that pay off' if epochs == MAX_FINE_TUNE_EPOCHS else 'as many as fit'} ({budget})",
        ),
        Decision(
            "recipe.fine_tune_learning_rate",
            rate,
            f"{'deep' if depth >= 4 else 'shallow'} fine-tune of {depth} block{'s' * (depth > 1)}",
        ),
    ]


def choose_patience(fine_tune_epochs: int) -> Decision:
    """As many epochs as phase 2 has (at least 3): its epochs are planned to fit the budget, and with a cosine
    schedule the best ones come last, after a first epoch that often scores below the head alone (measured on
    both benchmark sets); the best epoch of any phase is kept whatever the patience."""
    patience = max(3, fine_tune_epochs)
    return Decision(
        "recipe.early_stopping_patience",
        patience,
        "phase 2 runs its planned epochs: a cosine schedule's best epochs come last",
    )


def plan(
    facts: DataFacts,
    speed: Speed,
    *,
    variant_resolution: int,
    batch_size: int,
    budget_seconds: float | None,
    given: dict[str, Any],
) -> list[Decision]:
    """Every decision for the options not in `given` (the options the user set, by dotted path, with their
    values, which the later rules take as facts; `budget_seconds` is None when no budget was given). The budget
    and the image size are decided first: the others depend on them."""
    decisions: list[Decision] = []

    def keep(chosen: list[Decision]) -> None:
        decisions.extend(d for d in chosen if d.path not in given)

    if budget_seconds is None:
        keep([default_budget(facts, speed, variant_resolution)])
        budget_seconds = float(_value(decisions, "time_budget").rstrip("s"))
    keep([choose_image_size(facts, variant_resolution, speed, budget_seconds)])
    resolution = given.get("image_size") or _value(decisions, "image_size")
    keep(choose_head(facts, batch_size))
    epochs = given.get("epochs") or _value(decisions, "epochs")
    cached = given.get("augment", "none") == "none"  # pixel augmentation: every step runs the whole network
    head = head_seconds(facts, speed, resolution, epochs)
    seconds_left = budget_seconds - head - finish_seconds(facts, speed, resolution)
    keep(choose_fine_tune(facts, speed, resolution, seconds_left, _depths(given), cached=cached))
    if "fine_tune_epochs" in given:
        fine_tune_epochs = given["fine_tune_epochs"]
    else:
        fine_tune_epochs = _value(decisions, "fine_tune_epochs")
    keep([choose_patience(fine_tune_epochs or 0)])
    return decisions


# The options `replan_fine_tune` decides again when phase 2 starts.
FINE_TUNE_PATHS = (
    "recipe.unfreeze_blocks",
    "fine_tune_epochs",
    "recipe.fine_tune_learning_rate",
    "recipe.early_stopping_patience",
)


def replan_fine_tune(
    facts: DataFacts, speed: Speed, *, resolution: int, seconds_left: float, given: dict[str, Any]
) -> list[Decision]:
    """Phase 2's decisions again, from the seconds really left before the training deadline (evaluation and
    export are already set aside) when phase 2 starts; options in `given` are kept."""
    cached = given.get("augment", "none") == "none"
    chosen = choose_fine_tune(facts, speed, resolution, seconds_left, _depths(given), cached=cached)
    epochs = given.get("fine_tune_epochs", next((d.value for d in chosen if d.path == "fine_tune_epochs"), 0))
    return [d for d in [*chosen, choose_patience(epochs)] if d.path not in given]


def _depths(given: dict[str, Any]) -> tuple[int, ...]:
    """A depth the user gave is the only one tried (its epochs still fit the budget)."""
    depth = given.get("recipe.unfreeze_blocks")
    return DEPTHS if depth is None else (int(depth),)


def _value(decisions: list[Decision], path: str) -> Any:
    return next(d.value for d in decisions if d.path == path)
