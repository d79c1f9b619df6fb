"""Typed run configuration: the one source of truth for training options and their defaults.

`RunConfig` is what `fine_tune` takes, what `runs/<id>/config.yaml` holds, what the
`workbench train` flags are generated from and what the app builds its form from. Every
field carries `metadata={"help": ..., "choices": ...}` (choices only where they are closed).

Nothing here imports TensorFlow, so the CLI and the app can read the config cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
CLASS_WEIGHTS = ("auto", "balanced", "none")
CACHE_FEATURES = ("auto", "on", "off")
# Augmentation presets of `pipelines.make_datasets` (pipelines.AUGMENT_PRESETS; a test keeps the
# two lists equal without importing TensorFlow here). "none" needs no pixel work, so phase 1 can
# train the head on backbone features computed once.
AUGMENTS = ("none", "light", "standard", "strong")

# The embedded sample is small and its images are small: at 160 px instead of Lite0's 224 px,
# the main job (`workbench train`, no data) fine-tunes in a few minutes on 2 CPU cores.
SAMPLE_IMAGE_SIZE = 160


def _field(default: Any, help: str, choices: tuple | None = None, **kwargs: Any) -> Any:
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if dataclasses.is_dataclass(default):
        # A fresh instance per config: a shared default would leak edits between configs.
        return field(default_factory=type(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class RecipeConfig:
    """Hyper-parameters of the two-phase recipe. The defaults are documented in README, "Training"."""

    learning_rate: float = _field(1e-3, "peak AdamW learning rate of phase 1 (head only), reached after warmup")
    fine_tune_learning_rate: float = _field(
        1e-4,
        "peak AdamW learning rate of phase 2 (top blocks unfrozen); lower, so the pretrained "
        "features are adjusted rather than overwritten",
    )
    warmup_fraction: float = _field(
        0.1, "fraction of each phase's steps spent warming the learning rate up linearly from 0"
    )
    weight_decay: float = _field(0.004, "AdamW decoupled weight decay (the Keras default)")
    label_smoothing: float = _field(0.1, "label smoothing of the categorical cross-entropy")
    class_weights: str = _field(
        "auto",
        "weight the loss by inverse class frequency: auto = only when the largest class is more than 1.5x the smallest",
        CLASS_WEIGHTS,
    )
    early_stopping_patience: int = _field(
        3, "stop a phase after this many epochs without a better validation accuracy (0 = never)"
    )
    unfreeze_blocks: int = _field(
        3, "phase 2 unfreezes this many blocks from the top (the `top` conv counts as one block)"
    )
    cache_features: str = _field(
        "auto",
        "phase 1 trains the head on backbone features computed once: auto = when the "
        "augmentation needs no pixel work (augment none)",
        CACHE_FEATURES,
    )
    dropout: float | None = _field(None, "dropout rate before the classifier; empty = the variant's published rate")
    val_fraction: float | None = _field(
        None,
        "fraction of each class held out for validation when the data has no val/ split; empty = the pipelines default",
    )
    test_fraction: float | None = _field(
        None,
        "fraction of each class held out for the final test when the data has no test/ "
        "split; empty = the pipelines default",
    )


@dataclass
class RunConfig:
    """One training run: data, model, hardware and the recipe."""

    data: str | None = _field(
        None, "image folder (one sub-folder per class), .zip of one, or tfds:NAME; empty = the embedded sample dataset"
    )
    variant: str = _field("lite0", "EfficientNet variant: b0..b7, lite0..lite4, phi=<float> (see `workbench variants`)")
    weights: str | None = _field(
        "imagenet", "initial weights: imagenet, none (random init) or a path to a .h5 / .weights.h5 file"
    )
    image_size: int | None = _field(
        None, f"input resolution in pixels; empty = the variant's own ({SAMPLE_IMAGE_SIZE} px for the embedded sample)"
    )
    batch_size: int = _field(32, "images per replica per step; the global batch is this x replicas")
    epochs: int = _field(10, "phase 1 epochs (frozen backbone, head only)")
    fine_tune_epochs: int = _field(3, "phase 2 epochs (top blocks unfrozen); 0 skips phase 2")
    augment: str = _field("none", "augmentation preset of the training images", AUGMENTS)
    precision: str = _field(
        "auto",
        "numeric precision: auto = mixed_float16 on a GPU of compute capability 7.0 or higher, float32 on CPU",
        PRECISIONS,
    )
    strategy: str = _field(
        "auto", "distribution strategy: auto = mirrored when more than one GPU is visible", STRATEGIES
    )
    seed: int = _field(0, "random seed for the split, shuffling and the head's initialisation")
    out: str = _field("runs", "folder in which a new run directory runs/<run-id>/ is created")
    run_dir: str | None = _field(None, "explicit run directory (overrides out); the app picks it so it can reattach")
    # _field turns a dataclass default into a default_factory, so no instance is shared.
    recipe: RecipeConfig = _field(RecipeConfig(), "two-phase recipe hyper-parameters")  # noqa: RUF009

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build a config from a (possibly partial) dict; unknown keys raise `ValueError`."""
        return _from_dict(cls, values, prefix="")

    def save(self, path: str | Path) -> None:
        """Write YAML (or JSON for a `.json` path) atomically."""
        import yaml

        from workbench.engine.rundir import atomic_write_text

        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        import yaml

        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read run config {path}: {exc.strerror}; check the path") from exc
        try:
            values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"run config {path} is not valid YAML/JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"run config {path} must hold a mapping of option: value")
        try:
            return cls.from_dict(values)
        except ValueError as exc:
            raise ValueError(f"run config {path}: {exc}") from exc

    # ------------------------------------------------------------------ checks
    def validate(self) -> RunConfig:
        """Raise `ValueError` naming the option, the problem and the fix; return self."""
        for path, f, value, _ in iter_fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"{path}={value!r} is not one of {', '.join(choices)}")
        positive = {"batch_size": self.batch_size, "epochs": self.epochs}
        if self.image_size is not None:
            positive["image_size"] = self.image_size
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name}={value} must be at least 1")
        r = self.recipe
        non_negative = {
            "fine_tune_epochs": self.fine_tune_epochs,
            "recipe.unfreeze_blocks": r.unfreeze_blocks,
            "recipe.early_stopping_patience": r.early_stopping_patience,
            "recipe.weight_decay": r.weight_decay,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"{name}={value} must be 0 or more")
        for name, value in {
            "recipe.learning_rate": r.learning_rate,
            "recipe.fine_tune_learning_rate": r.fine_tune_learning_rate,
        }.items():
            if not value > 0:
                raise ValueError(f"{name}={value} must be greater than 0 (try 1e-3 for the head)")
        for name, value in {
            "recipe.warmup_fraction": r.warmup_fraction,
            "recipe.label_smoothing": r.label_smoothing,
        }.items():
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} must be in [0, 1)")
        if r.dropout is not None and not 0 <= r.dropout < 1:
            raise ValueError(f"recipe.dropout={r.dropout} must be in [0, 1)")
        if r.val_fraction is not None and not 0 < r.val_fraction < 1:
            raise ValueError(f"recipe.val_fraction={r.val_fraction} must be in (0, 1), e.g. 0.2")
        if r.test_fraction is not None and not 0 <= r.test_fraction < 1:
            raise ValueError(f"recipe.test_fraction={r.test_fraction} must be in [0, 1), e.g. 0.1")
        return self


def _resolve_type(tp: Any) -> Any:
    """`int | None` -> int, `str` -> str; forward references resolved by `typing.get_type_hints`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _optional(tp: Any) -> bool:
    return (isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union) and type(None) in typing.get_args(
        tp
    )


def coerce(path: str, tp: Any, value: Any) -> Any:
    """Convert `value` (from YAML, JSON or a command-line string) to the field type `tp`."""
    base = _resolve_type(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
        if _optional(tp):
            return None
        if value is None:
            raise ValueError(f"{path} must not be empty")
    if base is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{path}={value!r} is not a boolean (true/false)")
    if base in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{path}={value!r} must be a number")
        try:
            number = base(value) if base is float else int(str(value), 10)
        except ValueError:
            raise ValueError(f"{path}={value!r} must be {'an integer' if base is int else 'a number'}") from None
        return number
    if base is str:
        return str(value)
    return value


def _from_dict(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        where = f" in {prefix.rstrip('.')}" if prefix else ""
        raise ValueError(f"unknown option(s){where}: {', '.join(unknown)}; known options are: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(prefix + name, tp, value)
    return cls(**kwargs)


def iter_fields(
    config: Any = None, cls: type = RunConfig, prefix: str = ""
) -> Iterator[tuple[str, dataclasses.Field, Any, Any]]:
    """Yield `(dotted path, field, value or default, type)` for every leaf option, nested ones
    included. The CLI and the app build their forms from this."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = getattr(config, f.name) if config is not None else None
            yield from iter_fields(sub, tp, prefix=f"{prefix}{f.name}.")
            continue
        if config is not None:
            value = getattr(config, f.name)
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield prefix + f.name, f, value, tp


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `config` with dotted-path overrides (`{"recipe.learning_rate": 0.01}`) applied."""
    values = config.to_dict()
    for path, value in overrides.items():
        node = values
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return RunConfig.from_dict(values)
