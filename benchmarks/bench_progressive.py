"""Progressive learning (EfficientNetV2's method) against fixed-size training: time to the same validation accuracy.

Two experiments, each trained by the engine (`workbench.engine.fine_tune`) in this process, arms one after the other
on the same data, split and seed:

* `scratch`: B0v2 from random weights (`--from-scratch --weights none`), every layer training, at `--scratch-size`
  px for `--scratch-epochs` epochs with the light augmentation: `fixed` (`--progressive false`) against
  `progressive` (4 stages from half the size to the full size, regularisation growing with it).
* `finetune`: Lite0 from ImageNet weights at `--finetune-size` px. Phase 1 (the head, identical in every arm) then
  phase 2 with the top 6 blocks unfrozen and the light augmentation: `fixed` against `progressive`. A third arm,
  `cached`, is what `--recipe auto` does by default: no pixel augmentation, so phase 2 trains the unfrozen
  blocks on the frozen blocks' output computed once (`cached_trunk`); it shows what progressive competes with.

Time is the phase's own wall clock (from its `phase` event), so phase 1 of the fine-tuning arms, the same for all,
does not dilute the ratio. "Time to target": the first epoch whose validation accuracy reaches the target, the
lower of the two arms' best (so both reach it); ratio = fixed / progressive (above 1: progressive is faster).
Each arm's own test split is scored too (the same stratified split for all).

    python benchmarks/bench_progressive.py --data ../shared/data/cifar10-train-subset
    python benchmarks/bench_progressive.py --data /tmp/fashion6/train      # second_dataset.py builds it
    python benchmarks/bench_progressive.py --measure-trace                 # what a retrace per stage costs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import CIFAR_SUBSET


def experiment_configs(args) -> dict[str, dict[str, dict]]:
    """experiment -> arm -> RunConfig fields (everything explicit: no automatic choice differs between arms)."""
    scratch = {
        "variant": "b0v2",
        "weights": "none",
        "from_scratch": True,
        "image_size": args.scratch_size,
        "epochs": args.scratch_epochs,
        "augment": "light",
        "recipe_mode": "fixed",
        "recipe": {"learning_rate": 2e-3, "early_stopping_patience": 0},
    }
    finetune = {
        "variant": "lite0",
        "weights": "imagenet",
        "image_size": args.finetune_size,
        "epochs": 3,
        "fine_tune_epochs": args.finetune_epochs,
        "augment": "light",
        "recipe_mode": "fixed",
        "recipe": {
            "learning_rate": 1e-3,
            "fine_tune_learning_rate": 3e-4,
            "unfreeze_blocks": 6,
            "early_stopping_patience": 0,
            "cache_features": "off",
        },
    }
    cached = {**finetune, "augment": "none", "recipe": {**finetune["recipe"], "cache_features": "auto"}}
    return {
        "scratch": {
            "fixed": {**scratch, "progressive": False},
            "progressive": {**scratch, "progressive": True},
        },
        "finetune": {
            "fixed": {**finetune, "progressive": False},
            "progressive": {**finetune, "progressive": True},
            "cached": {**cached, "progressive": False},
        },
    }


def run_arm(fields: dict, data: Path, out: Path, phase: int, label: str) -> dict:
    """Train one arm; its validation curve in `phase` as (seconds since the phase began, epoch, val_accuracy)."""
    from workbench.engine import RunConfig, fine_tune
    from workbench.evaluation import evaluate

    began: dict[int, float] = {}
    curve: list[tuple[float, int, float]] = []

    def listen(event):
        if event["type"] == "phase":
            began[event["phase"]] = time.perf_counter()
        elif event["type"] == "epoch" and event["phase"] == phase:
            curve.append((round(time.perf_counter() - began[phase], 1), event["epoch"], event["val_accuracy"]))
            print(
                f"  {label:24s} {curve[-1][0]:7.1f} s  epoch {event['epoch']:2d}  val_acc {event['val_accuracy']:.4f}",
                flush=True,
            )
        elif event["type"] == "stage":
            print(f"  {label:24s} stage {event['stage']}: {event['image_size']} px", flush=True)

    config = RunConfig.from_dict({**fields, "data": str(data), "out": str(out)})
    start = time.perf_counter()
    result = fine_tune(config, listeners=[listen], tensorboard=False)
    seconds = time.perf_counter() - start
    report = evaluate(result.run_dir, plots=False)
    return {
        "best_val_accuracy": result.best_val_accuracy,  # of the whole run (phase 1 included)
        "test_accuracy": report["accuracy"],
        "phase_seconds": curve[-1][0] if curve else None,
        "run_seconds": seconds,
        "curve": curve,
    }


def time_to(curve, target: float) -> float | None:
    return next((seconds for seconds, _, accuracy in curve if accuracy >= target - 1e-9), None)


def compare(arms: dict[str, dict]) -> dict:
    """Time of `fixed` and `progressive` to the lower of their best validation accuracies in the measured phase,
    and the ratio."""
    target = min(max(accuracy for _, _, accuracy in arms[name]["curve"]) for name in ("fixed", "progressive"))
    times = {name: time_to(arm["curve"], target) for name, arm in arms.items()}
    fixed_best = max(accuracy for _, _, accuracy in arms["fixed"]["curve"])
    return {
        "target_val_accuracy": target,
        "seconds_to_target": times,
        "fixed_over_progressive": times["fixed"] / times["progressive"],
        # the ratio flatters an arm that peaks lower: say whether progressive ever matched fixed-size training
        "progressive_reaches_fixed_best": time_to(arms["progressive"]["curve"], fixed_best) is not None,
    }


def measure_trace(variant: str = "b0v2", sizes=(32, 40, 48, 64), images: int = 256) -> dict:
    """What a stage change costs: the first `fit` at each size (tracing included) and a second one (compute only),
    with the size in the data's element spec (Keras traces the training step again for each size) and with it left
    unknown (`phases._any_image_size`: one trace serves every size)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from workbench.engine.phases import _any_image_size
    from workbench.models import build_model
    from workbench.models.surgery import unfreeze_all

    model = build_model(variant, 10, weights=None, input_shape=(None, None, 3))
    unfreeze_all(model)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rows = []
    for loosened in (False, True):
        model.train_function = None  # each way starts from an untraced step
        for size in sizes:
            x = np.random.default_rng(size).uniform(0, 255, (images, size, size, 3)).astype("float32")
            y = keras.utils.to_categorical(np.arange(images) % 10, 10)
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).cache()
            data = _any_image_size(data) if loosened else data
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                model.fit(data, epochs=1, verbose=0)
                seconds.append(round(time.perf_counter() - start, 2))
            rows.append({"size_unknown": loosened, "size": size, "first_fit_s": seconds[0], "second_fit_s": seconds[1]})
            print(
                f"  size unknown={loosened!s:5s} {size:3d} px: first fit {seconds[0]:6.1f} s, second {seconds[1]:5.1f} s"
            )
    return {"variant": variant, "images_per_fit": images, "fits": rows}


def warm_up() -> None:
    """TensorFlow's start and the first graphs are paid before anything is timed."""
    import numpy as np

    from workbench.models import build_model

    for variant in ("lite0", "b0v2"):
        build_model(variant, num_classes=2, weights=None, input_shape=(64, 64, 3)).predict_on_batch(
            np.zeros((2, 64, 64, 3), np.float32)
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CIFAR_SUBSET, help="folder of class folders")
    parser.add_argument("--experiments", default="scratch,finetune")
    parser.add_argument("--scratch-size", type=int, default=64)
    parser.add_argument("--scratch-epochs", type=int, default=12)
    parser.add_argument("--finetune-size", type=int, default=128)
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--measure-trace", action="store_true", help="only measure what a retrace per stage costs")
    args = parser.parse_args(argv)

    from bench_step_throughput import machine

    if args.measure_trace:
        report = {"benchmark": "progressive_trace", "machine": machine(), **measure_trace()}
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        return 0

    if not args.data.is_dir():
        print(f"{args.data} is not a folder of class folders; pass --data", file=sys.stderr)
        return 2
    configs = experiment_configs(args)
    work = Path(tempfile.mkdtemp(prefix="bench-progressive-"))
    results: dict[str, dict] = {}
    try:
        warm_up()
        for experiment in args.experiments.split(","):
            phase = 1 if experiment == "scratch" else 2
            arms = {
                arm: run_arm(fields, args.data, work / experiment / arm, phase, f"{experiment}/{arm}")
                for arm, fields in configs[experiment].items()
            }
            results[experiment] = {"arms": arms, **compare(arms), "config": configs[experiment]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "progressive", "machine": machine(), "data": str(args.data), "results": results}
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average'][0]:.1f}")
    print(f"{'experiment/arm':22s} {'best val':>8s} {'test':>7s} {'phase s':>8s} {'to target s':>11s}")
    for experiment, r in results.items():
        for arm, a in r["arms"].items():
            reach = r["seconds_to_target"][arm]
            print(
                f"{experiment + '/' + arm:22s} {a['best_val_accuracy']:8.4f} {a['test_accuracy']:7.4f} "
                f"{a['phase_seconds']:8.0f} {'-' if reach is None else f'{reach:.0f}':>11s}"
            )
        print(
            f"{experiment}: target val accuracy {r['target_val_accuracy']:.4f}; fixed / progressive time to it = "
            f"{r['fixed_over_progressive']:.2f}x; progressive reaches fixed's best: {r['progressive_reaches_fixed_best']}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
