"""Typed dataclass configs with field metadata: the one mechanism behind `RunConfig` and `SearchConfig`.

Every option is declared once, with `option(default, help, choices)`. From those declarations come:

* `Config.from_dict` / `load`: build a config from a (partial) dict, YAML or JSON; strings are converted
  like the command line gives them, and an unknown key at any level is a `ValueError` listing the known ones;
* `iter_fields`: every leaf option as `(dotted path, field, value, type)`, for forms and checks;
* `with_overrides`: a copy with dotted-path overrides (`{"recipe.learning_rate": 0.01}`) applied;
* `check_choices`: closed choices validated, the message naming the option and the allowed values;
* `add_arguments` / `overrides_from_args`: the argparse flags of a command and the options the user gave.

Nothing here imports TensorFlow, so the CLI and the app read configs cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_NONE_WORDS = ("", "none", "null")


def option(
    default: Any,
    help: str,
    choices: tuple | None = None,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    fixed: Any = None,
    internal: bool = False,
    **kwargs: Any,
) -> Any:
    """A dataclass field carrying its help text, closed choices and (only where the leaf name will not do)
    its command-line flag and metavar. A nested config (a dataclass default) gets a fresh instance per config.

    `fixed`: for an option whose default is None because a recipe chooses it (the automatic recipe,
    `workbench.engine.auto`), the value the explicit `fixed` recipe uses: declared once, here.
    `internal`: a record the program writes (saved with the config), not an option: it gets no flag."""
    metadata: dict[str, Any] = {"help": help, **({"internal": True} if internal else {})}
    for key, value in (("choices", choices), ("flag", flag), ("metavar", metavar), ("fixed", fixed)):
        if value is not None:
            metadata[key] = value
    if dataclasses.is_dataclass(default):
        # A shared default instance would leak edits between configs.
        return dataclasses.field(default_factory=type(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


# ---------------------------------------------------------------------------------------------- types
def _is_union(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union


def _resolve_type(tp: Any) -> Any:
    """`int | None` -> int, `str` -> str."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _optional(tp: Any) -> bool:
    return _is_union(tp) and type(None) in typing.get_args(tp)


def _coerce_tuple(path: str, base: Any, value: Any) -> tuple:
    """`tuple[float, float]` from a list (YAML/JSON) or "1.0,2.0" (the command line)."""
    items = value.split(",") if isinstance(value, str) else value
    kinds = typing.get_args(base)
    if not isinstance(items, (list, tuple)) or len(items) != len(kinds):
        example = ",".join(["1.0"] * len(kinds))
        raise ValueError(f"{path}={value!r} must be {len(kinds)} comma-separated values, e.g. {example}")
    return tuple(coerce(path, kind, item) for kind, item in zip(kinds, items, strict=True))


def coerce(path: str, tp: Any, value: Any) -> Any:
    """Convert `value` (from YAML, JSON or a command-line string) to the field type `tp`."""
    base = _resolve_type(tp)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if _optional(tp):
            return None
        if value is None:
            raise ValueError(f"{path} must not be empty")
    if typing.get_origin(base) is tuple:
        return _coerce_tuple(path, base, value)
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
            return base(value) if base is float else int(str(value).strip(), 10)
        except ValueError:
            raise ValueError(f"{path}={value!r} must be {'an integer' if base is int else 'a number'}") from None
    if base is str:
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------- walking
def _config_class(config_or_class: Any) -> type:
    return config_or_class if isinstance(config_or_class, type) else type(config_or_class)


def from_dict(cls: type, values: Any, prefix: str = "") -> Any:
    """Build `cls` from a (possibly partial) mapping; unknown keys at any level raise `ValueError`."""
    where = prefix.rstrip(".")
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'} must be a mapping of option: value, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option(s){f' in {where}' if where else ''}: {', '.join(map(str, unknown))}; "
            f"known options are: {', '.join(known)}"
        )
    kwargs = {}
    choices = {f.name: f.metadata.get("choices", ()) for f in dataclasses.fields(cls)}
    for name, value in values.items():
        tp = hints[name]
        if isinstance(value, str) and value in choices[name]:
            kwargs[name] = value  # a choice spelt like an empty word ("none") is that choice, not empty
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(prefix + name, tp, value)
    return cls(**kwargs)


def iter_fields(config_or_class: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any, Any]]:
    """Yield `(dotted path, field, value, type)` for every leaf option, nested ones included: the values
    of a config instance, or the defaults of a config class."""
    cls = _config_class(config_or_class)
    instance = None if isinstance(config_or_class, type) else config_or_class
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(getattr(instance, f.name) if instance is not None else tp, f"{prefix}{f.name}.")
        elif instance is not None:
            yield prefix + f.name, f, getattr(instance, f.name), tp
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield prefix + f.name, f, default, tp


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of `config` with dotted-path overrides (`{"recipe.learning_rate": 0.01}`) applied."""
    values = dataclasses.asdict(config)
    for path, value in overrides.items():
        node = values
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(type(config), values)


def check_choices(config: Any) -> None:
    """Raise `ValueError` for the first option whose value is not one of its declared choices."""
    for path, f, value, _ in iter_fields(config):
        choices = f.metadata.get("choices")
        if choices is None or (value is None and "fixed" in f.metadata):  # empty: a recipe chooses it
            continue
        if value not in choices:
            raise ValueError(f"{path}={value!r} is not one of {', '.join(choices)}")


class Config:
    """Serialisation shared by the top-level configs (dataclasses that subclass this)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build a config from a (possibly partial) dict; unknown keys at any level raise `ValueError`."""
        return from_dict(cls, values)

    def save(self, path: str | Path) -> None:
        """Write JSON for a `.json` path, YAML otherwise, atomically."""
        import yaml

        from pipelines.files import atomic_write_text

        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path):
        """Read a config saved by `save`; every problem is a `ValueError` naming the file."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read config {path}: {exc.strerror}; check the path") from exc
        try:
            values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"config {path} is not valid YAML/JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"config {path} must hold a mapping of option: value")
        try:
            return cls.from_dict(values)
        except ValueError as exc:
            raise ValueError(f"config {path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------- argparse
def flag(path: str, f: dataclasses.Field) -> str:
    """The command-line flag of an option: declared, or its leaf name (`recipe.learning_rate` -> `--learning-rate`)."""
    return f.metadata.get("flag") or "--" + path.rsplit(".", 1)[-1].replace("_", "-")


def _shown(value: Any) -> str:
    return (
        ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, tuple)
        else str(value)
    )


def add_arguments(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """One flag per leaf option of `cls`, with its help, choices and default taken from the declaration.

    Options named in `positional` become optional positional arguments. Nested configs get an argument
    group titled by their own help text. A flag the user does not give is absent from the namespace
    (`argparse.SUPPRESS`), so `overrides_from_args` holds only what was typed and the defaults stay in `cls`.
    """
    groups: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    titles = {
        f.name: f.metadata.get("help", f.name)
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[f.name])
    }
    for path, f, default, tp in iter_fields(cls):
        if f.metadata.get("internal"):
            continue
        head = path.split(".", 1)[0]
        target = parser
        if "." in path:
            target = groups.get(head) or groups.setdefault(head, parser.add_argument_group(titles[head]))
        if default is not None:
            help_text = f.metadata["help"] + f" (default: {_shown(default)})"
        elif "fixed" in f.metadata:
            help_text = (
                f.metadata["help"]
                + f" (default: chosen by --recipe auto; {_shown(f.metadata['fixed'])} with --recipe fixed)"
            )
        else:
            help_text = f.metadata["help"]
        kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if path in positional:
            target.add_argument(path, nargs="?", metavar=path.upper(), **kwargs)
            continue
        if tp is bool:  # `--save-anyway` alone means true; `--save-anyway false` still works
            kwargs.update(nargs="?", const="true", metavar="true|false")
        elif "choices" not in kwargs:
            kwargs["metavar"] = f.metadata.get("metavar") or path.rsplit(".", 1)[-1].upper()
        target.add_argument(flag(path, f), dest=path, **kwargs)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of `cls` given on the command line, by dotted path (strings; `from_dict` converts them)."""
    return {path: getattr(args, path) for path, *_ in iter_fields(cls) if hasattr(args, path)}
