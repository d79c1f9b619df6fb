"""Saved scaling families: coefficients found by a scale search, stored as small JSON files.

A family saved as `<dir>/<name>.json` is usable everywhere a variant name is, as
`<name>:phi=<float>` (for example `cifar:phi=1`). The directory is `$WORKBENCH_FAMILIES`,
else `~/.workbench/families`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from pipelines.files import atomic_write_json
from workbench.models.scaling import ScalingFamily

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def families_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_FAMILIES", Path.home() / ".workbench" / "families"))


def check_family_name(name: str) -> str:
    """Return `name` if it can name a saved family, else raise ValueError saying what is allowed."""
    from workbench.models.registry import registered_families

    registered = [family.name for family in registered_families()]
    if name in registered or not _NAME.match(name):
        raise ValueError(
            f"invalid family name {name!r}: use lower-case letters, digits, '.', '_' or '-', "
            f"and not the name of a registered family ({', '.join(registered)})"
        )
    return name


def save_family(family: ScalingFamily, directory: str | Path | None = None) -> Path:
    """Write the family atomically and return its path."""
    check_family_name(family.name)
    directory = Path(directory) if directory is not None else families_dir()
    return atomic_write_json(directory / f"{family.name}.json", dataclasses.asdict(family))


def load_family(name: str, directory: str | Path | None = None) -> ScalingFamily:
    directory = Path(directory) if directory is not None else families_dir()
    path = directory / f"{check_family_name(name)}.json"
    if not path.is_file():
        known = ", ".join(list_families(directory)) or "none saved yet"
        raise ValueError(
            f"unknown scaling family {name!r} (looked for {path}); saved families: {known}. "
            "Run `workbench scale-search` to create one."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(ScalingFamily)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known keys: {sorted(fields)}")
    return ScalingFamily(**data)


def list_families(directory: str | Path | None = None) -> list[str]:
    directory = Path(directory) if directory is not None else families_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json"))
