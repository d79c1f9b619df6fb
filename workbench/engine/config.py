"""Typed run configuration: the one source of truth for training options and their defaults.

`RunConfig` is what `fine_tune` takes, what `runs/<id>/config.yaml` holds, what the
`workbench train` flags are generated from and what the app builds its form from. Every
field is declared with `config_fields.option` (help text, and choices where they are closed);
`SearchConfig` shares the same mechanism.

Nothing here imports TensorFlow, so the CLI and the app can read the config cheaply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import config_fields
from workbench.config_fields import Config, check_choices, option, with_overrides

__all__ = [
    "RecipeConfig",
    "RejectConfig",
    "RunConfig",
    "auto_paths",
    "iter_fields",
    "unset_paths",
    "with_overrides",
    "with_recipe_defaults",
]

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
CLASS_WEIGHTS = ("auto", "balanced", "none")
CACHE_FEATURES = ("auto", "on", "off")


class PresetNames(tuple):
    """The named presets, as a tuple (help texts, the app's menu), whose `in` also admits a learned policy
    `randaugment:N,M,S` (`pipelines.augment.parse_policy`; `workbench search --space augment` finds them), so
    the one choices check of the configs and the CLI accepts both."""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, str) and ":" in value:
            from pipelines.augment import POLICY_PREFIX, parse_policy  # only for such a name: pipelines imports PIL

            try:
                return value.startswith(POLICY_PREFIX) and parse_policy(value) is not None
            except ValueError:
                return False
        return tuple.__contains__(self, value)


# Augmentation presets of `pipelines.make_datasets` (pipelines.AUGMENT_PRESETS; a test keeps the
# two lists equal without importing TensorFlow here). "none" needs no pixel work, so phase 1 can
# train the head on backbone features computed once.
AUGMENTS = PresetNames(("none", "light", "standard", "strong", "autoaugment"))


class RecipeModes(tuple):
    """auto and fixed, whose `in` also admits a recipe file (`workbench search` writes them), so the CLI's
    `--recipe` takes one; `workbench.hparam_search.recipe_file.apply_recipe_file` turns it into options."""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, str) and value.lower().endswith((".yaml", ".yml", ".json")):
            return True
        return tuple.__contains__(self, value)


RECIPE_MODES = RecipeModes(("auto", "fixed"))
# The most `auto` plans for without --time-budget (`workbench.engine.auto.default_budget`: less for small data).
DEFAULT_BUDGET_MINUTES = 10

# The embedded sample is small and its images are small: at 160 px instead of Lite0's 224 px,
# the main job (`workbench train`, no data) fine-tunes in a few minutes on 2 CPU cores.
SAMPLE_IMAGE_SIZE = 160

DATA_HELP = (
    "image folder (one sub-folder per class), .zip of one, tfds:NAME, or a multi-label labels.csv/.jsonl "
    "(image,labels rows) next to its images; empty = the embedded sample dataset"
)


@dataclass
class RecipeConfig:
    """Hyper-parameters of the two-phase recipe. The defaults are documented in README, "Training"."""

    learning_rate: float | None = option(
        None, "peak AdamW learning rate of phase 1 (head only), reached after warmup", fixed=1e-3
    )
    fine_tune_learning_rate: float | None = option(
        None,
        "peak AdamW learning rate of phase 2 (top blocks unfrozen); lower, so the pretrained "
        "features are adjusted rather than overwritten",
        fixed=1e-4,
    )
    warmup_fraction: float = option(
        0.1, "fraction of each phase's steps spent warming the learning rate up linearly from 0"
    )
    weight_decay: float = option(0.004, "AdamW decoupled weight decay (the Keras default)")
    label_smoothing: float = option(0.1, "label smoothing of the categorical cross-entropy")
    loss: str = option(
        "bce",
        "multi-label runs (a CSV/JSONL of labels): bce = binary cross-entropy (label-smoothed), asl = asymmetric "
        "loss (Ridnik et al. 2021), for many negatives per image; single-label runs use cross-entropy",
        ("bce", "asl"),
    )
    class_weights: str = option(
        "auto",
        "weight the loss by inverse class frequency: auto = only when the largest class is more than 1.5x the smallest",
        CLASS_WEIGHTS,
    )
    early_stopping_patience: int | None = option(
        None, "stop a phase after this many epochs without a better validation accuracy (0 = never)", fixed=3
    )
    unfreeze_blocks: int | None = option(
        None, "phase 2 unfreezes this many blocks from the top (the `top` conv counts as one block)", fixed=3
    )
    cache_features: str = option(
        "auto",
        "phase 1 trains the head on backbone features computed once: auto = when the "
        "augmentation needs no pixel work (augment none)",
        CACHE_FEATURES,
    )
    dropout: float | None = option(None, "dropout rate before the classifier; empty = the variant's published rate")
    progressive_stages: int = option(
        4, "progressive learning: the phase is cut into this many stages of growing image size and regularisation"
    )
    progressive_start: float = option(
        0.5, "progressive learning: the first stage's image size, as a fraction of the target size"
    )
    progressive_dropout: bool = option(
        False,
        "progressive learning also grows the classifier's dropout, from a third of its rate to its rate; each stage "
        "then traces the training step again (18 s for B0v2 on 2 idle CPU cores), so it is off unless asked",
    )
    val_fraction: float | None = option(
        None,
        "fraction of each class held out for validation when the data has no val/ split; empty = the pipelines default",
    )
    test_fraction: float | None = option(
        None,
        "fraction of each class held out for the final test when the data has no test/ "
        "split; empty = the pipelines default",
    )
    group_by: str | None = option(
        None,
        "group-aware split: a regex whose first capture group of each file name is its group (a patient, a video), "
        "kept on one side of the split; empty = the data's groups.csv if it has one, else no groups",
        metavar="REGEX",
    )


# How images of no class are told apart (`workbench.evaluation.rejection.SCORES`). mahalanobis (on the pooled
# features) won on benchmarks/bench_rejection.py in two runs: AUROC 0.816 and 0.820 against energy's 0.809 and 0.790
# and max_softmax's 0.783 and 0.760, and more known images kept at the same false-accept rate (README, "Calibration
# and rejection"); the others are reported beside it.
# Spelled out (importing them would import NumPy here); tests/test_ood.py checks they are the same.
REJECT_SCORES = ("max_softmax", "energy", "mahalanobis", "relative_mahalanobis", "mahalanobis_l2")
DEFAULT_REJECT_SCORE = "mahalanobis"


@dataclass
class RejectConfig(Config):
    """Calibration and rejection, fitted on the validation split after training (`workbench.evaluation.calibrate`).

    The temperature is always fitted when the run has a validation split; rejection is opt-in, because it
    changes what the model answers."""

    reject: str = option(
        "off",
        "answer 'unknown' (index -1) below a threshold: auto = chosen on validation for --reject-target, "
        "off = never, or a probability in (0, 1) that the calibrated top probability must reach",
        metavar="auto|off|PROB",
    )
    reject_target: str = option(
        "accuracy:0.95",
        "what --reject auto aims for on validation: accuracy:A (accuracy on accepted images), coverage:C "
        "(share of images accepted) or false-accept:F (share of --unknown-dir images accepted)",
        metavar="KIND:VALUE",
    )
    reject_score: str = option(
        DEFAULT_REJECT_SCORE,
        "score --reject auto thresholds: max_softmax (calibrated top probability), energy "
        "(T * logsumexp(logits / T)), mahalanobis (minus the distance of the pooled features to the nearest "
        "class, fitted on the train split), relative_mahalanobis (that plus the distance to all of them) or "
        "mahalanobis_l2 (mahalanobis on unit-norm features)",
        REJECT_SCORES,
    )
    unknown_dir: str | None = option(
        None, "folder of images that belong to no class: false-accept targets and the AUROC of known vs unknown"
    )

    def validate(self) -> RejectConfig:
        """Raise `ValueError` naming the option and the fix; return self."""
        from workbench.evaluation.rejection import parse_reject, parse_target

        check_choices(self)
        parse_reject(self.reject)
        parse_target(self.reject_target)
        if self.unknown_dir not in (None, "") and not Path(self.unknown_dir).is_dir():
            raise ValueError(
                f"unknown_dir={self.unknown_dir!r} is not a folder; pass a folder of images that belong to no class"
            )
        return self


@dataclass
class RunConfig(Config):
    """One training run: data, model, hardware and the recipe."""

    data: str | None = option(None, DATA_HELP)
    variant: str = option(
        "lite0",
        "EfficientNet variant: b0..b7, lite0..lite4, b0v2..b3v2, sv2, mv2, lv2, phi=<float> (see `workbench variants`)",
    )
    weights: str | None = option(
        "imagenet", "initial weights: imagenet, none (random init) or a path to a .h5 / .weights.h5 file"
    )
    image_size: int | None = option(
        None, f"input resolution in pixels; empty = the variant's own ({SAMPLE_IMAGE_SIZE} px for the embedded sample)"
    )
    batch_size: int = option(32, "images per replica per step; the global batch is this x replicas")
    epochs: int | None = option(None, "phase 1 epochs (frozen backbone, head only)", fixed=10)
    fine_tune_epochs: int | None = option(None, "phase 2 epochs (top blocks unfrozen); 0 skips phase 2", fixed=3)
    augment: str | None = option(None, "augmentation preset of the training images", AUGMENTS, fixed="none")
    from_scratch: bool = option(
        False,
        "train every layer (BatchNorm too) from random weights in one phase of --epochs, instead of the two-phase "
        "transfer recipe; needs --weights none",
    )
    progressive: bool = option(
        False,
        "progressive learning (EfficientNetV2): the image size grows from half the target to the target across the "
        "epochs of phase 2 (or of --from-scratch training), and RandAugment and MixUp grow with it; off by default: "
        "on 2 CPU cores it was not faster to the same accuracy (README, benchmarks/bench_progressive.py)",
    )
    recipe_mode: str = option(
        "auto",
        "auto = measure this machine and the data, then choose the resolution, epochs, phase-2 depth and "
        "learning rates (each choice and its reason is printed and saved in config.yaml); fixed = the "
        "documented defaults; FILE = a recipe file of `workbench search` (its options, then auto for the rest). "
        "Options you give always win",
        RECIPE_MODES,
        flag="--recipe",
        metavar="auto|fixed|FILE",
    )
    recipe_source: str | None = option(  # a record: where a --recipe FILE came from
        None, "the recipe file this run's options came from (a search's winner), if any", internal=True
    )
    time_budget: str | None = option(
        None,
        "wall-clock budget of the whole run, evaluation and export included, e.g. 90s, 10m, 1h; the run adapts "
        "epochs and phase-2 depth to it; empty = auto plans for about what the naive keras.io loop would take "
        f"on this machine (at most {DEFAULT_BUDGET_MINUTES} minutes), and fixed has none",
        metavar="DURATION",
    )
    precision: str = option(
        "auto",
        "numeric precision: auto = mixed_float16 on a GPU of compute capability 7.0 or higher, float32 on CPU",
        PRECISIONS,
    )
    strategy: str = option(
        "auto", "distribution strategy: auto = mirrored when more than one GPU is visible", STRATEGIES
    )
    seed: int = option(0, "random seed for the split, shuffling and the head's initialisation")
    out: str = option("runs", "folder in which a new run directory runs/<run-id>/ is created")
    run_dir: str | None = option(None, "explicit run directory (overrides out); the app picks it so it can reattach")
    # A record, not an option (no flag): the default is None, so no list is shared between configs.
    auto_decisions: list[str] | None = option(  # noqa: RUF009
        None, "what the automatic recipe chose for this run and why, one line per option", internal=True
    )
    # option turns a dataclass default into a default_factory, so no instance is shared.
    recipe: RecipeConfig = option(RecipeConfig(), "two-phase recipe hyper-parameters")  # noqa: RUF009
    rejection: RejectConfig = option(RejectConfig(), "calibration and rejection of images of no class")  # noqa: RUF009

    # ------------------------------------------------------------------ checks
    def validate(self) -> RunConfig:
        """Raise `ValueError` naming the option, the problem and the fix; return self."""
        check_choices(self)
        if self.recipe_mode not in ("auto", "fixed"):
            raise ValueError(
                f"recipe_mode={self.recipe_mode!r} is a recipe file: apply it with "
                "workbench.hparam_search.apply_recipe_file (what `workbench train --recipe FILE` does)"
            )
        r = self.recipe
        checks = {
            "batch_size": (self.batch_size, 1),
            "epochs": (self.epochs, 1),
            "image_size": (self.image_size, 1),
            "fine_tune_epochs": (self.fine_tune_epochs, 0),
            "recipe.unfreeze_blocks": (r.unfreeze_blocks, 0),
            "recipe.early_stopping_patience": (r.early_stopping_patience, 0),
            "recipe.weight_decay": (r.weight_decay, 0),
        }
        for name, (value, least) in checks.items():
            if value is not None and value < least:
                raise ValueError(
                    f"{name}={value} must be at least {least}" if least else f"{name}={value} must be 0 or more"
                )
        for name, value in {
            "recipe.learning_rate": r.learning_rate,
            "recipe.fine_tune_learning_rate": r.fine_tune_learning_rate,
        }.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value} must be greater than 0 (try 1e-3 for the head)")
        for name, value in {
            "recipe.warmup_fraction": r.warmup_fraction,
            "recipe.label_smoothing": r.label_smoothing,
        }.items():
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} must be in [0, 1)")
        self.budget_seconds()  # a malformed --time-budget is refused here, before any work
        if r.progressive_stages < 1 or not 0 < r.progressive_start <= 1:
            raise ValueError(
                f"recipe.progressive_stages={r.progressive_stages} must be at least 1 and "
                f"recipe.progressive_start={r.progressive_start} in (0, 1], e.g. 4 and 0.5"
            )
        if self.from_scratch and str(self.weights).lower() != "none":
            raise ValueError(
                f"from_scratch trains from random weights, but weights={self.weights}: add --weights none, or drop "
                "--from-scratch to fine-tune these weights with the two-phase recipe"
            )
        if r.dropout is not None and not 0 <= r.dropout < 1:
            raise ValueError(f"recipe.dropout={r.dropout} must be in [0, 1)")
        if r.val_fraction is not None and not 0 < r.val_fraction < 1:
            raise ValueError(f"recipe.val_fraction={r.val_fraction} must be in (0, 1), e.g. 0.2")
        if r.test_fraction is not None and not 0 <= r.test_fraction < 1:
            raise ValueError(f"recipe.test_fraction={r.test_fraction} must be in [0, 1), e.g. 0.1")
        self.rejection.validate()
        self._check_inputs()
        return self

    def budget_seconds(self) -> float | None:
        """`time_budget` in seconds (None: no budget given); ValueError naming the option for a malformed one."""
        from workbench.timefmt import parse_duration

        if self.time_budget in (None, ""):
            return None
        return parse_duration(self.time_budget, option="--time-budget")

    def _check_inputs(self) -> None:
        """The variant and its weights, before any ingest or run directory: a typo must not cost minutes or
        leave a run behind (issue 11, B2). (The data path is checked by `fine_tune` for new runs only: a
        resumed run reads its manifest, wherever the data folder is now.)

        Pure Python (the variant registry and a file check): no model is built here.
        """
        from workbench.models import get_variant
        from workbench.models.weights import check_available

        spec = get_variant(self.variant)  # ValueError listing the valid names
        if self.weights not in (None, "none"):
            check_available(spec, self.weights)  # WeightsError (a ValueError) naming the fix


def fixed_value(path: str) -> Any:
    """The `fixed` recipe's value of an option that `auto` chooses (declared on the field)."""
    for name, f, _, _ in config_fields.iter_fields(RunConfig):
        if name == path:
            return f.metadata["fixed"]
    raise KeyError(path)


def planned_paths() -> list[str]:
    """Every option the automatic recipe decides when it is left empty: the budget, the image size, `auto_paths`."""
    return ["time_budget", "image_size", *auto_paths()]


def auto_paths() -> list[str]:
    """The options the automatic recipe may choose: those declared with a `fixed` value."""
    return [name for name, f, _, _ in config_fields.iter_fields(RunConfig) if "fixed" in f.metadata]


def unset_paths(config: RunConfig) -> list[str]:
    """The options of `config` that a recipe still has to choose (left empty by the user)."""
    return [path for path in auto_paths() if _get(config, path) is None]


def with_recipe_defaults(config: RunConfig, chosen: dict[str, Any] | None = None) -> RunConfig:
    """`config` with every option still empty filled: from `chosen` (the automatic recipe's choices) where it
    has the option, else the fixed recipe's value. Options the user set are never changed."""
    chosen = {path: value for path, value in (chosen or {}).items() if _get(config, path) is None}
    fills = {path: fixed_value(path) for path in unset_paths(config)}
    return with_overrides(config, {**fills, **chosen})


def chosen_paths(config: RunConfig) -> set[str]:
    """The options the automatic recipe chose for `config` (the paths of its `auto_decisions` lines)."""
    return {line.split(" = ", 1)[0] for line in config.auto_decisions or []}


def _get(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def iter_fields(config: RunConfig | None = None) -> Iterator[tuple[str, dataclasses.Field, Any, Any]]:
    """`config_fields.iter_fields` of a run config (default: RunConfig's defaults); the CLI and the app
    build their forms from it."""
    return config_fields.iter_fields(RunConfig if config is None else config)
