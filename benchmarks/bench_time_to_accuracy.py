"""Time to accuracy: our two-phase recipe against the naive recipe, ImageNet Lite0 on CIFAR-10 images.

* ours: `workbench.engine.fine_tune` (stratified 80/20 split, backbone features computed once,
  head trained on them, then the top blocks fine-tuned);
* naive: the same Lite0 ImageNet weights and zero-initialised head, Adam at 1e-3,
  `keras.utils.image_dataset_from_directory` (random 80/20), the frozen backbone recomputed on
  every image every epoch (the usual tutorial loop).

Both run in this process, one after the other, timed from the first file read. Reports
validation accuracy against wall time for each, the time each takes to reach `--target`, and
the speed-up at the highest accuracy both reach. Goal: 90% in under 15 minutes on 2 cores and
at least 3x faster than naive.

    python benchmarks/bench_time_to_accuracy.py                       # the full comparison
    python benchmarks/bench_time_to_accuracy.py --per-class 100 --image-size 128 --naive-epochs 3
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

from _machine import CIFAR_SUBSET as DEFAULT_DATA


def subset(data: Path, per_class: int | None, dest: Path) -> Path:
    """The first `per_class` images of each class (links, no copies); the data itself when None."""
    if per_class is None:
        return data
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[:per_class]:
            os.symlink(image, dest / folder.name / image.name)
    return dest


def run_ours(data: Path, args, out: Path) -> dict:
    from workbench.engine import RunConfig, fine_tune

    curve = []
    start = time.perf_counter()

    def listen(event):
        if event["type"] == "epoch":
            curve.append(
                {
                    "seconds": time.perf_counter() - start,
                    "phase": event["phase"],
                    "epoch": event["epoch"],
                    "val_accuracy": event["val_accuracy"],
                }
            )
            print(
                f"  ours  {curve[-1]['seconds']:7.1f} s  phase {event['phase']} epoch {event['epoch']:2d}  "
                f"val_acc {event['val_accuracy']:.4f}",
                flush=True,
            )

    config = RunConfig.from_dict(
        {
            "data": str(data),
            "variant": "lite0",
            "weights": "imagenet",
            "image_size": args.image_size,
            "batch_size": args.batch,
            "epochs": args.epochs,
            "fine_tune_epochs": args.fine_tune_epochs,
            "precision": "float32",
            "strategy": "default",
            "out": str(out),
            "recipe": {
                "val_fraction": 0.2,
                "test_fraction": 0.0,
                "early_stopping_patience": args.patience,
                **({"unfreeze_blocks": args.unfreeze_blocks} if args.unfreeze_blocks is not None else {}),
                **({"fine_tune_learning_rate": args.fine_tune_lr} if args.fine_tune_lr is not None else {}),
            },
        }
    )
    result = fine_tune(config, listeners=[listen])
    return {
        "curve": curve,
        "seconds": time.perf_counter() - start,
        "best_val_accuracy": result.best_val_accuracy,
        "feature_pass_seconds": curve[0]["seconds"] if curve else None,
    }


def run_naive(data: Path, args) -> dict:
    import keras

    from workbench.models import build_model
    from workbench.models.surgery import freeze_backbone

    start = time.perf_counter()
    size = (args.image_size, args.image_size)
    train, val = keras.utils.image_dataset_from_directory(
        data,
        validation_split=0.2,
        subset="both",
        seed=0,
        image_size=size,
        batch_size=args.batch,
        label_mode="categorical",
    )
    classes = len(train.class_names)
    model = build_model("lite0", num_classes=classes, weights="imagenet", input_shape=(*size, 3))
    freeze_backbone(model)
    # The same zero-initialised head as ours, so the comparison is of the training loops alone.
    for variable in model.get_layer("predictions").weights:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    curve = []
    for epoch in range(1, args.naive_epochs + 1):
        history = model.fit(train, validation_data=val, epochs=1, shuffle=False, verbose=0)
        curve.append(
            {
                "seconds": time.perf_counter() - start,
                "epoch": epoch,
                "val_accuracy": float(history.history["val_accuracy"][-1]),
            }
        )
        print(
            f"  naive {curve[-1]['seconds']:7.1f} s  epoch {epoch:2d}  val_acc {curve[-1]['val_accuracy']:.4f}",
            flush=True,
        )
        if curve[-1]["val_accuracy"] >= args.target or curve[-1]["seconds"] > args.naive_max_seconds:
            break
    return {
        "curve": curve,
        "seconds": time.perf_counter() - start,
        "best_val_accuracy": max(c["val_accuracy"] for c in curve),
    }


def time_to(curve: list[dict], accuracy: float) -> float | None:
    for point in curve:
        if point["val_accuracy"] is not None and point["val_accuracy"] >= accuracy:
            return point["seconds"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of class folders")
    parser.add_argument("--per-class", type=int, default=None, help="use only this many images per class")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30, help="ours: phase-1 epochs (cached features)")
    parser.add_argument("--fine-tune-epochs", type=int, default=2, help="ours: phase-2 epochs")
    parser.add_argument("--unfreeze-blocks", type=int, default=None, help="ours: blocks unfrozen in phase 2")
    parser.add_argument("--fine-tune-lr", type=float, default=None, help="ours: phase-2 learning rate")
    parser.add_argument("--patience", type=int, default=5, help="ours: early-stopping patience")
    parser.add_argument("--naive-epochs", type=int, default=10)
    parser.add_argument("--naive-max-seconds", type=float, default=1800)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(
            f"{args.data} is not a folder of class folders; pass --data (e.g. ../shared/data/cifar10-train-subset)",
            file=sys.stderr,
        )
        return 2
    from bench_step_throughput import machine

    work = Path(tempfile.mkdtemp(prefix="bench-tta-"))
    try:
        data = subset(args.data, args.per_class, work / "data")
        print(f"data: {args.data} ({args.per_class or 'all'} per class), Lite0 ImageNet at {args.image_size} px")
        ours = run_ours(data, args, work / "runs")
        naive = None if args.skip_naive else run_naive(data, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "benchmark": "time_to_accuracy",
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ours": ours,
        "naive": naive,
    }
    report["ours"]["seconds_to_target"] = time_to(ours["curve"], args.target)
    print(
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"load average {report['machine']['load_average'][0]:.1f} (shared machine)"
    )
    print(
        f"ours : best val_acc {ours['best_val_accuracy']:.4f} in {ours['seconds']:.0f} s; "
        f"{args.target:.0%} reached at {report['ours']['seconds_to_target']} s"
    )
    if naive:
        report["naive"]["seconds_to_target"] = time_to(naive["curve"], args.target)
        common = min(ours["best_val_accuracy"], naive["best_val_accuracy"])
        t_ours, t_naive = time_to(ours["curve"], common), time_to(naive["curve"], common)
        report["common_accuracy"] = common
        report["speedup_at_common_accuracy"] = t_naive / t_ours if t_ours and t_naive else None
        print(
            f"naive: best val_acc {naive['best_val_accuracy']:.4f} in {naive['seconds']:.0f} s; "
            f"{args.target:.0%} reached at {report['naive']['seconds_to_target']} s"
        )
        print(
            f"to {common:.4f} (the best both reach): ours {t_ours:.0f} s, naive {t_naive:.0f} s, "
            f"ratio naive/ours = {report['speedup_at_common_accuracy']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
