"""`workbench runs [--json] [--out runs]`: a table of the runs under a folder, newest last.

Everything comes from what each run directory already holds: `config.yaml` (data, variant, settings),
`events.jsonl` (best validation accuracy, duration, how it ended), `eval/report.json` (test accuracy) and
the run's lock (`workbench.engine.rundir.run_is_live`). Nothing here imports TensorFlow, so the table is
instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (  # (key, header)
    ("id", "run"),
    ("data", "data"),
    ("variant", "variant"),
    ("image_size", "px"),
    ("epochs", "ep"),
    ("fine_tune_epochs", "ft"),
    ("unfreeze_blocks", "blocks"),
    ("augment", "augment"),
    ("best_val_accuracy", "best val"),
    ("test_accuracy", "test"),
    ("seconds", "time"),
    ("status", "status"),
)
STATUSES = ("running", "done", "stopped", "failed", "incomplete")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs", help="folder holding the run directories (default: runs)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per run) instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = list_runs(args.out)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    elif not rows:
        print(f"no runs under {args.out}/; train one with `workbench train`")
    else:
        print(format_table(rows))
    return 0


def list_runs(out: str | Path) -> list[dict]:
    """One row per run directory under `out` (sorted by id, which sorts by start time); [] when there is none."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder of runs; give the folder runs are trained into")
    if not out.is_dir():
        return []
    return [describe_run(path) for path in sorted(out.iterdir()) if _is_run(path)]


def _is_run(path: Path) -> bool:
    from workbench.engine.rundir import CHECKPOINTS_DIR, CONFIG_FILE

    # A scale search's folder holds events.jsonl too, but it is not a training run.
    return (
        path.is_dir()
        and not (path / "search.json").exists()
        and ((path / CONFIG_FILE).exists() or (path / CHECKPOINTS_DIR).is_dir())
    )


def describe_run(run_dir: Path) -> dict:
    """The table row of one run directory; fields it cannot know are None."""
    from workbench.engine.events import read_events, summarize

    config = _read_yaml(run_dir / "config.yaml")
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    events = read_events(run_dir)
    summary = summarize(events)
    phase = summary["phase"] or {}
    times = [e["time"] for e in events if isinstance(e.get("time"), (int, float))]
    return {
        "id": run_dir.name,
        "path": str(run_dir),
        "data": "(sample)" if config and config.get("data") is None else config.get("data"),
        "variant": config.get("variant"),
        # The resolution actually used (the phase event resolves "the variant's own") before the configured one.
        "image_size": phase.get("image_size", config.get("image_size")),
        "epochs": config.get("epochs"),
        "fine_tune_epochs": config.get("fine_tune_epochs"),
        "unfreeze_blocks": recipe.get("unfreeze_blocks"),
        "augment": config.get("augment"),
        "best_val_accuracy": summary["best_val_accuracy"],
        "test_accuracy": _test_accuracy(run_dir),
        "seconds": round(times[-1] - times[0], 1) if len(times) > 1 else None,
        "status": run_status(run_dir, summary),
    }


def run_status(run_dir: Path, summary: dict) -> str:
    """One of `STATUSES`: training now, finished, ended by STOP/SIGTERM, ended by an error, or none of
    these (killed, or never started training)."""
    from workbench.engine.rundir import run_is_live

    if run_is_live(run_dir):
        return "running"
    if summary["status"] == "done":
        return "stopped" if summary["done"].get("stopped") else "done"
    if summary["status"] == "error":
        return "failed"
    return "incomplete"


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def _test_accuracy(run_dir: Path) -> float | None:
    try:
        value = json.loads((run_dir / "eval" / "report.json").read_text(encoding="utf-8")).get("accuracy")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, (int, float)) else None


def format_table(rows: list[dict]) -> str:
    """The rows as aligned text columns (accuracies to 3 decimals, durations in words, `-` for unknown)."""
    cells = [[header for _, header in COLUMNS]] + [[_cell(key, row.get(key)) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def _cell(key: str, value) -> str:
    from workbench.timefmt import format_duration

    if value is None:
        return "-"
    if key in ("best_val_accuracy", "test_accuracy"):
        return f"{value:.3f}"
    if key == "seconds":
        return format_duration(value, "words")
    if key == "data":
        return Path(str(value)).name or str(value)
    return str(value)
