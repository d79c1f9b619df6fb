"""Typed options of `workbench search` (no TensorFlow here: the CLI reads them cheaply).

Declared with `config_fields.option` like `RunConfig` and the scaling search's `SearchConfig`; saved as
`search.json` in the search directory, and a rerun there continues the study only with the same options
(those in RESUMABLE_CHANGES excepted).
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.config_fields import Config, check_choices, option
from workbench.engine.config import DATA_HELP

SPACES = ("recipe", "augment")
STRATEGIES = ("bayes", "genetic", "grid")
OBJECTIVES = ("accuracy", "accuracy,latency")
PRUNERS = ("median", "hyperband", "none")


@dataclass
class HParamSearchConfig(Config):
    """One search. Each trial fine-tunes `variant` on a stratified subset for a short schedule (the proxy)."""

    data: str | None = option(None, DATA_HELP)
    space: str = option(
        "recipe",
        "what to search: recipe = phase-1/phase-2 learning rates, weight decay, label smoothing, blocks unfrozen, "
        "resolution, dropout and the augmentation preset; augment = a RandAugment (N, M) + MixUp/CutMix policy "
        "on the fixed recipe",
        SPACES,
    )
    strategy: str = option(
        "bayes",
        "bayes = Optuna's TPE sampler; genetic = NSGA-II (with --objective accuracy,latency: a Pareto front); "
        "grid = a few values of every dimension, in random order",
        STRATEGIES,
    )
    objective: str = option(
        "accuracy",
        "accuracy = the best validation accuracy; accuracy,latency = also the inference time per image at the "
        "trial's resolution (two objectives: the result is a Pareto front, and trials are not pruned)",
        OBJECTIVES,
    )
    trials: int = option(12, "trials to finish (pruned ones count); a rerun with more continues the study")
    time_budget: str | None = option(
        "30m",
        "wall-clock budget of this run of the search, e.g. 20m, 1h: no trial starts after it, and the last one "
        "is cut at an epoch boundary; empty = none",
        metavar="DURATION",
    )
    pruner: str = option(
        "median",
        "stop hopeless trials early from their per-epoch validation accuracy: median = Optuna's MedianPruner, "
        "hyperband = its HyperbandPruner, none = never",
        PRUNERS,
    )
    variant: str = option("lite0", "EfficientNet variant every trial fine-tunes")
    weights: str = option("imagenet", "initial weights of every trial (imagenet, none or a file)")
    train_per_class: int = option(60, "training images per class in the stratified subset the trials train on")
    val_per_class: int = option(30, "validation images per class the trials are scored on (all trials: the same)")
    epochs: int = option(4, "phase-1 epochs per trial (head only; seconds on cached features)")
    fine_tune_epochs: int = option(1, "phase-2 epochs per trial (top blocks unfrozen); 0 = phase 1 only")
    batch_size: int = option(32, "images per step")
    resolutions: str = option(
        "128,160,224", "image sizes the recipe space chooses from (the augment space uses the first)", metavar="PX,PX"
    )
    seed: int = option(0, "seed of the sampler, the subset and every trial")
    out: str = option("runs", "folder for a new search-<id>/ directory")
    search_dir: str | None = option(None, "explicit search directory; an existing one is continued")
    recipe_out: str | None = option(None, "where the winner's recipe file goes; empty = <search dir>/best-recipe.yaml")
    save_anyway: bool = option(
        False, "save the winner's recipe even when it is not ahead of the runner-up by more than the noise"
    )

    # Options a rerun may change (the others define what finished trials mean).
    RESUMABLE_CHANGES = ("trials", "time_budget", "out", "search_dir", "recipe_out", "save_anyway")

    def validate(self) -> HParamSearchConfig:
        """Raise `ValueError` naming the option and the fix; return self."""
        check_choices(self)
        for name in ("trials", "train_per_class", "val_per_class", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.fine_tune_epochs < 0:
            raise ValueError(f"fine_tune_epochs={self.fine_tune_epochs} must be 0 or more")
        self.resolution_list()
        self.budget_seconds()
        from workbench.models import get_variant

        get_variant(self.variant)  # ValueError listing the valid names
        return self

    def resolution_list(self) -> list[int]:
        try:
            sizes = [int(v) for v in str(self.resolutions).split(",") if v.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 32:
            raise ValueError(f"resolutions={self.resolutions!r} must be image sizes of 32 px or more, e.g. 128,160,224")
        return sizes

    def budget_seconds(self) -> float | None:
        from workbench.timefmt import parse_duration

        if self.time_budget in (None, ""):
            return None
        return parse_duration(self.time_budget, option="--time-budget")

    def objectives(self) -> list[str]:
        return self.objective.split(",")

    def differences(self, other: HParamSearchConfig) -> list[str]:
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in self.RESUMABLE_CHANGES and mine[k] != theirs.get(k))
