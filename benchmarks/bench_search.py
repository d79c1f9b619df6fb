"""Does `workbench search` beat the automatic recipe? And what do AutoAugment, RandAugment and a learned
policy give at equal epochs, at what cost per epoch?

Mode `recipe` (per data set):

1. `workbench search DATA --space recipe --strategy bayes` within `--search-budget` (Lite0, ImageNet weights);
2. `workbench train DATA` (auto) and `workbench train DATA --recipe <searched>` with the same `--time-budget`
   (equal final training time: auto chooses the epochs of both within it), each scored on the run's own test
   split, which the search never sees (every run of one seed makes the same split; the search's trials train
   and score on a subset of its train and val splits);
3. the difference against the noise of the difference of two accuracies on those test images
   (`engine.chance.difference_noise`, one standard error); within it, a tie.

Mode `augment` (one data set): a learned policy (`workbench search --space augment` within
`--search-budget`), then `autoaugment`, `standard` (RandAugment 2 ops at 0.3) and the learned policy trained
with the same fixed recipe and epochs; test accuracy and seconds per training epoch of each.

    python benchmarks/bench_search.py recipe --data ../shared/data/cifar10-train-subset --search-budget 20m
    python benchmarks/bench_search.py augment --data /work/datasets/fashion6/train
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import CIFAR_SUBSET, cpu_model


def _search(data: str, out: Path, space: str, budget: str, trials: int, **options) -> dict:
    from workbench.hparam_search import HParamSearchConfig, run_search

    config = HParamSearchConfig(
        data=data,
        space=space,
        strategy="bayes",
        trials=trials,
        time_budget=budget,
        search_dir=str(out),
        save_anyway=True,  # the benchmark trains the winner either way, and reports the tie
        **options,
    )
    start = time.perf_counter()
    result = run_search(config, listeners=[_trial_line])
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "trials": len(result.rows),
        "trained": sum(r["status"] == "trained" for r in result.rows),
        "pruned": sum(r["status"] == "pruned" for r in result.rows),
        "shared_features": sum(bool(r.get("shared_features")) for r in result.rows),
        "best": result.chosen["options"],
        "best_val_accuracy": result.chosen["val_accuracy"],
        "baseline_val_accuracy": next((r["val_accuracy"] for r in result.rows if r.get("baseline")), None),
        "warning": result.warning,
        "recipe": str(result.recipe_path),
    }


def _trial_line(event: dict) -> None:
    if event["type"] == "trial" and event.get("status") in ("trained", "pruned"):
        acc = event.get("val_accuracy")
        print(
            f"    trial {event['number']} {event['status']} val {acc if acc is None else round(acc, 4)} "
            f"in {event.get('trial_seconds')} s",
            flush=True,
        )


def _train(overrides: dict) -> dict:
    """One `workbench train` run (no export) and its own test split's accuracy."""
    from workbench.engine.config import RunConfig, with_overrides
    from workbench.engine.events import read_events
    from workbench.engine.recipe import fine_tune
    from workbench.evaluation import evaluate

    config = with_overrides(RunConfig(), overrides).validate()
    start = time.perf_counter()
    result = fine_tune(config, tensorboard=False)
    train_s = time.perf_counter() - start
    report = evaluate(result.run_dir)
    epochs = [e for e in read_events(result.run_dir) if e["type"] == "epoch"]
    per_epoch = {}
    for phase in (1, 2):
        seconds = [e for e in epochs if e.get("phase") == phase]
        if seconds:
            per_epoch[phase] = len(seconds)
    saved = RunConfig.load(Path(result.run_dir) / "config.yaml")
    return {
        "run_dir": str(result.run_dir),
        "test_accuracy": report["accuracy"],
        "test_images": report["num_examples"],
        "val_accuracy": result.best_val_accuracy,
        "train_seconds": round(train_s, 1),
        "epochs_per_phase": per_epoch,
        "image_size": saved.image_size,
        "augment": saved.augment,
    }


def _epoch_seconds(run_dir: str) -> float | None:
    """Mean seconds of a training epoch on images (phase-1 epochs on images, from the epoch events' times)."""
    from workbench.engine.events import read_events

    events = read_events(run_dir)
    times = [e["time"] for e in events if e["type"] in ("phase", "epoch") and e.get("phase") == 1]
    if len(times) < 2:
        return None
    return round((times[-1] - times[0]) / (len(times) - 1), 2)


def recipe_mode(args) -> dict:
    from workbench.engine.chance import difference_noise
    from workbench.hparam_search import apply_recipe_file

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-search-"))
    data = str(args.data)
    print(f"search ({args.search_budget}) on {data}", flush=True)
    search = _search(
        data,
        work / "search",
        "recipe",
        args.search_budget,
        args.trials,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        epochs=args.trial_epochs,
        fine_tune_epochs=1,
        resolutions=args.resolutions,
        seed=args.seed,
    )
    print(f"  {search}", flush=True)
    common = {"data": data, "time_budget": args.train_budget, "seed": args.seed, "out": str(work / "runs")}
    print("train auto", flush=True)
    auto = _train(common)
    print(f"  {auto}", flush=True)
    print("train --recipe searched", flush=True)
    searched = _train(apply_recipe_file(search["recipe"], common))
    print(f"  {searched}", flush=True)
    noise = difference_noise(max(auto["test_accuracy"], searched["test_accuracy"]), auto["test_images"])
    gap = searched["test_accuracy"] - auto["test_accuracy"]
    verdict = "searched wins" if gap > noise else ("auto wins" if -gap > noise else "tie (within the noise)")
    return {
        "data": data,
        "search": search,
        "auto": auto,
        "searched": searched,
        "gap": gap,
        "noise": noise,
        "verdict": verdict,
    }


def augment_mode(args) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-augment-"))
    data = str(args.data)
    size = int(args.resolutions.split(",")[0])
    print(f"augment search ({args.search_budget}) on {data}", flush=True)
    search = _search(
        data,
        work / "search",
        "augment",
        args.search_budget,
        args.trials,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        epochs=args.trial_epochs,
        fine_tune_epochs=0,
        resolutions=str(size),
        seed=args.seed,
    )
    print(f"  {search}", flush=True)
    results = {}
    for name in ("standard", "autoaugment", search["best"]["augment"]):
        overrides = {
            "data": data,
            "recipe_mode": "fixed",
            "augment": name,
            "image_size": size,
            "epochs": args.epochs,
            "fine_tune_epochs": 0,
            "seed": args.seed,
            "out": str(work / "runs"),
        }
        print(f"train {name}", flush=True)
        run = _train(overrides)
        run["seconds_per_epoch"] = _epoch_seconds(run["run_dir"])
        results[name] = run
        print(f"  {run}", flush=True)
    return {"data": data, "search": search, "policies": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("recipe", "augment"))
    parser.add_argument("--data", type=Path, default=CIFAR_SUBSET)
    parser.add_argument("--search-budget", default="20m")
    parser.add_argument("--train-budget", default="3m", help="equal time budget of the auto and searched runs")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--trial-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="augment mode: epochs of each policy")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--resolutions", default="128,160")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for the searches and runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = recipe_mode(args) if args.mode == "recipe" else augment_mode(args)
    report["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg()}
    report["args"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
