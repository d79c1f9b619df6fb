"""The two search spaces, as data: each dimension names the `RunConfig` option it sets, its range for the
samplers (TPE, NSGA-II) and the few values the grid tries.

A trial's parameters become `RunConfig` overrides (`overrides`), so what a trial trained and what the winner's
recipe file holds are the same dotted options `workbench train` takes. The augment space's three numbers
become one preset name, `randaugment:N,M,S` (`pipelines.augment.policy_name`).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Dim:
    """One searched dimension. kind: float (low..high, log-scaled when `log`), int (low..high) or choice."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()
    grid: tuple = ()  # the values the grid strategy tries

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_categorical(self.name, list(self.choices))


# The options of the recipe space, with ranges around the fixed recipe's values (1e-3, 1e-4, 0.004, 0.1, 3
# blocks, the variant's dropout). image_size's and augment's choices come from the search's options.
RECIPE_DIMS = (
    Dim("recipe.learning_rate", "float", 1e-4, 1e-2, log=True, grid=(3e-4, 1e-3, 3e-3)),
    Dim("recipe.fine_tune_learning_rate", "float", 1e-5, 1e-3, log=True, grid=(3e-5, 1e-4, 3e-4)),
    Dim("recipe.weight_decay", "float", 1e-4, 0.05, log=True, grid=(1e-3, 4e-3, 0.02)),
    Dim("recipe.label_smoothing", "float", 0.0, 0.2, grid=(0.0, 0.1, 0.2)),
    Dim("recipe.unfreeze_blocks", "int", 1, 6, grid=(1, 3, 6)),
    Dim("recipe.dropout", "float", 0.0, 0.5, grid=(0.1, 0.2, 0.4)),
)
RECIPE_AUGMENTS = ("none", "light", "standard", "strong", "autoaugment")

# The augment space: RandAugment's N (operations per image) and M (Keras' factor), and the MixUp/CutMix strength.
AUGMENT_DIMS = (
    Dim("rand_augment_ops", "int", 0, 3, grid=(0, 1, 2, 3)),
    Dim("rand_augment_magnitude", "float", 0.0, 1.0, grid=(0.1, 0.3, 0.6, 0.9)),
    Dim("mix_strength", "float", 0.0, 0.5, grid=(0.0, 0.2, 0.4)),
)


def dims(space: str, resolutions: list[int]) -> tuple[Dim, ...]:
    """The dimensions of `space` ("recipe" or "augment")."""
    if space == "augment":
        return AUGMENT_DIMS
    sizes = tuple(resolutions)
    return (
        *RECIPE_DIMS,
        Dim("image_size", "choice", choices=sizes, grid=sizes),
        Dim("augment", "choice", choices=RECIPE_AUGMENTS, grid=RECIPE_AUGMENTS),
    )


def grid(space_dims: tuple[Dim, ...]) -> dict[str, list]:
    """Optuna GridSampler's search space: every dimension's grid values."""
    return {d.name: list(d.grid) for d in space_dims}


def grid_size(space_dims: tuple[Dim, ...]) -> int:
    size = 1
    for d in space_dims:
        size *= len(d.grid)
    return size


def suggest(trial, space_dims: tuple[Dim, ...]) -> dict[str, Any]:
    return {d.name: d.suggest(trial) for d in space_dims}


def overrides(space: str, params: dict[str, Any], resolutions: list[int]) -> dict[str, Any]:
    """The `RunConfig` options (dotted) a trial with `params` trains with."""
    if space == "augment":
        from pipelines.augment import policy_name

        policy = policy_name(params["rand_augment_ops"], params["rand_augment_magnitude"], params["mix_strength"])
        return {"augment": policy, "image_size": resolutions[0]}
    return {name: _rounded(value) for name, value in params.items()}


def baseline(space: str, resolutions: list[int], variant_resolution: int, variant_dropout: float) -> dict[str, Any]:
    """The fixed recipe's point of the space (queued as the first trial, so the winner is compared with it)."""
    from workbench.engine.config import fixed_value

    if space == "augment":
        return {"rand_augment_ops": 2, "rand_augment_magnitude": 0.3, "mix_strength": 0.0}  # the standard preset
    return {
        "recipe.learning_rate": fixed_value("recipe.learning_rate"),
        "recipe.fine_tune_learning_rate": fixed_value("recipe.fine_tune_learning_rate"),
        "recipe.weight_decay": 0.004,
        "recipe.label_smoothing": 0.1,
        "recipe.unfreeze_blocks": fixed_value("recipe.unfreeze_blocks"),
        "recipe.dropout": variant_dropout,
        "image_size": min(resolutions, key=lambda r: abs(r - variant_resolution)),
        "augment": fixed_value("augment"),
    }


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits: what the recipe file shows is what trained."""
    return float(f"{value:.4g}") if isinstance(value, float) else value
