"""Recipe files: a search's winner as `RunConfig` options, with where it came from.

```yaml
kind: workbench-recipe
options:                      # dotted RunConfig options, exactly as the trial trained with them
  recipe.learning_rate: 0.0021
  augment: autoaugment
source:                       # provenance: the search, its trial, its score, and any warning
  search_dir: runs/search-20261128-190000
  trial: 7
  val_accuracy: 0.81
```

`workbench train DATA --recipe best.yaml` applies it with `apply_recipe_file`: the file's options, then the
flags the user gave (which win), and the automatic recipe (`--recipe auto`) chooses what neither set (epochs,
the time budget), so a searched recipe trains under the same budget rules as `auto`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KIND = "workbench-recipe"
SUFFIXES = (".yaml", ".yml", ".json")


def is_recipe_path(value: Any) -> bool:
    """Whether a `--recipe` value names a file (rather than the modes auto / fixed)."""
    return isinstance(value, str) and value.lower().endswith(SUFFIXES)


def save_recipe(path: str | Path, options: dict[str, Any], source: dict[str, Any]) -> Path:
    """Write a recipe file (YAML, or JSON for a .json path) atomically; the options are checked first."""
    import json

    import yaml

    from pipelines.files import atomic_write_text

    _check(options, path)
    path = Path(path)
    document = {"kind": KIND, "options": dict(options), "source": dict(source)}
    text = (
        json.dumps(document, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(document, sort_keys=False)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def load_recipe(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(options, source)` of a recipe file; every problem is a `ValueError` naming the file and the fix."""
    import json

    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"cannot read recipe file {path}: {exc.strerror}; give a file `workbench search` wrote, or auto/fixed"
        ) from exc
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"recipe file {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("kind") != KIND or not isinstance(document.get("options"), dict):
        raise ValueError(
            f"{path} is not a recipe file (it needs `kind: {KIND}` and a mapping `options`); "
            "`workbench search` writes them"
        )
    options = document["options"]
    _check(options, path)
    return options, dict(document.get("source") or {})


def apply_recipe_file(path: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """The `RunConfig` overrides of `workbench train --recipe FILE`: the file's options, then `given` (the
    user's flags, which win), `recipe_mode` auto for the rest, and `recipe_source` recording the file."""
    options, source = load_recipe(path)
    where = f"{path}" + (
        f" (search {source['search_dir']}, trial {source.get('trial')})" if "search_dir" in source else ""
    )
    return {
        **options,
        **{k: v for k, v in given.items() if k != "recipe_mode"},
        "recipe_mode": "auto",
        "recipe_source": where,
    }


def _check(options: dict[str, Any], path) -> None:
    """Only `RunConfig` options a recipe may set (no data, run directory or recipe mode), with valid values."""
    from workbench.engine.config import RunConfig, with_overrides

    refused = {"data", "run_dir", "out", "recipe_mode", "recipe_source", "auto_decisions"} & set(options)
    if refused:
        raise ValueError(f"recipe file {path} sets {', '.join(sorted(refused))}, which a recipe may not: remove them")
    try:
        with_overrides(RunConfig(weights="none"), options).validate()  # weights: a file here need not exist yet
    except ValueError as exc:
        raise ValueError(f"recipe file {path}: {exc}") from exc
