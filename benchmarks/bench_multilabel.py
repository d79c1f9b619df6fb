"""Multi-label on mosaics: ours (`fine_tune` on a labels.csv) against a per-label logistic regression on the same
frozen features, in the same run.

The set: 2x2 mosaics of four images drawn at random (classes uniformly, with repeats) from a class-folder data set,
labelled with the distinct classes they show (1 to 4 labels per mosaic). Two sets: the CIFAR-10 subset (10 labels,
32 px tiles, 64 px mosaics) and Fashion6 (`second_dataset.py`: 6 labels, 28 px grayscale tiles, 56 px mosaics,
its `train/` and `test/` images pooled). Every tile image is in at most one mosaic, so a test mosaic never repeats
a training image.

Ours: Lite0 with ImageNet weights, `fine_tune` on the written labels.csv with the default recipe (`--recipe auto`,
sigmoid head, binary cross-entropy or `--loss asl`) under `--time-budget`, thresholds tuned on validation.
Baseline: the same ImageNet Lite0, frozen; its pooled features of the same pixels (`make_datasets(...).plain`, at
the run's resolution), standardised; one scikit-learn `LogisticRegression` per label, C chosen on validation
mAP from a grid; thresholds tuned on validation the same way (`tune_thresholds`). Both are scored on the run's
test split with `multilabel_report`: mAP and macro F1.

    python benchmarks/bench_multilabel.py --data ../shared/data/cifar10-train-subset --json /tmp/ml-cifar.json
    python benchmarks/bench_multilabel.py --data /work/datasets/fashion6 --mosaics 240 --json /tmp/ml-fashion.json
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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def make_mosaics(data: Path, dest: Path, count: int, seed: int = 0) -> Path:
    """`count` 2x2 mosaics of `data`'s class folders into `dest/images/`, and `dest/labels.csv`; returns the CSV.

    Tiles are drawn without replacement from one shared pool per class, so no image is in two mosaics."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    # Class folders, or split folders (train/, test/) of class folders: their images are pooled per class.
    roots = [d for d in sorted(data.iterdir()) if d.is_dir() and d.name in ("train", "val", "test")] or [data]
    classes = sorted({p.name for root in roots for p in root.iterdir() if p.is_dir()})
    pools = {
        c: list(
            rng.permutation(
                sorted(
                    p
                    for root in roots
                    if (root / c).is_dir()
                    for p in (root / c).iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        )
        for c in classes
    }
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        available = [c for c in classes if pools[c]]
        chosen = [available[k] for k in rng.integers(0, len(available), 4)]
        if any(len(pools[c]) < chosen.count(c) for c in set(chosen)):
            break  # a pool ran dry: fewer mosaics
        tiles = [Image.open(pools[c].pop()).convert("RGB") for c in chosen]
        side = tiles[0].size[0]
        mosaic = Image.new("RGB", (2 * side, 2 * side))
        for k, tile in enumerate(tiles):
            mosaic.paste(tile.resize((side, side)), ((k % 2) * side, (k // 2) * side))
        name = f"images/mosaic_{i:05d}.png"
        mosaic.save(dest / name)
        rows.append(f"{name},{';'.join(sorted(set(chosen)))}")
    path = dest / "labels.csv"
    path.write_text("image,labels\n" + "\n".join(rows) + "\n")
    return path


def frozen_features(manifest, resolution: int, splits=("train", "val", "test")):
    """ImageNet Lite0's pooled features (frozen, no head) of each split's plain evaluation pixels."""
    import numpy as np

    from pipelines import make_datasets
    from workbench.models import build_model
    from workbench.models.surgery import feature_extractor

    model = build_model("lite0", num_classes=manifest.num_classes, weights="imagenet")
    if resolution != model.input_shape[1]:
        model = build_model(
            "lite0", num_classes=manifest.num_classes, weights="imagenet", input_shape=(resolution, resolution, 3)
        )
    extractor = feature_extractor(model)
    datasets = make_datasets(manifest, image_size=resolution, batch_size=64, augment="none")
    return {s: np.concatenate([extractor.predict_on_batch(x) for x, _ in datasets.plain(s)]) for s in splits}


def logistic_baseline(features: dict, targets: dict):
    """Per-label logistic regression, C from `C_GRID` by validation mAP; (val, test) probabilities and C."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features["train"])
    x = {s: scaler.transform(f) for s, f in features.items()}

    def fit(c):
        out = {s: np.zeros_like(targets[s]) for s in ("val", "test")}
        for k in range(targets["train"].shape[1]):
            model = LogisticRegression(C=c, max_iter=2000).fit(x["train"], targets["train"][:, k])
            for s in out:
                out[s][:, k] = model.predict_proba(x[s])[:, 1]
        return out

    best = None
    for c in C_GRID:
        probs = fit(c)
        labels = [k for k in range(targets["val"].shape[1]) if targets["val"][:, k].any()]
        val_map = float(np.mean([average_precision_score(targets["val"][:, k], probs["val"][:, k]) for k in labels]))
        if best is None or val_map > best[0]:
            best = (val_map, c, probs)
    if best[1] in (C_GRID[0], C_GRID[-1]):
        print(f"  note: the baseline's best C ({best[1]}) is at the end of the grid; it may be under-tuned", flush=True)
    return best[2]["val"], best[2]["test"], best[1], best[0]


def bench(data: Path, count: int, time_budget: str, loss: str, seed: int) -> dict:
    import numpy as np
    from bench_step_throughput import machine

    from pipelines import Manifest
    from workbench.engine import RunConfig, fine_tune
    from workbench.evaluation.multilabel import multilabel_report, read_thresholds, tune_thresholds
    from workbench.evaluation.multilabel_run import predict_split
    from workbench.serving.model_files import open_run

    work = Path(tempfile.mkdtemp(prefix="bench-multilabel-"))
    started = time.perf_counter()
    try:
        labels_csv = make_mosaics(data, work / "mosaics", count, seed)

        def listen(event):
            if event["type"] == "epoch":
                print(
                    f"  phase {event['phase']} epoch {event['epoch']:2d}  val_loss {event['val_loss']:.4f}", flush=True
                )
            elif event["type"] == "plan":
                print("\n".join(f"  auto: {line}" for line in event["decisions"]), flush=True)

        config = RunConfig(
            data=str(labels_csv), variant="lite0", out=str(work / "runs"), time_budget=time_budget, seed=seed
        )
        config.recipe.loss = loss
        result = fine_tune(config, listeners=[listen], tensorboard=False)
        train_seconds = time.perf_counter() - started
        run = open_run(result.run_dir)
        manifest = Manifest.load(run.manifest_path)
        targets = {s: manifest.split_targets(s) for s in ("train", "val", "test")}
        paths = [r.path for r in manifest.split_records("test")]
        ours = multilabel_report(
            targets["test"],
            predict_split(run, manifest, ["test"], 64),
            read_thresholds(run.path, run.class_names),
            run.class_names,
            paths,
        )
        scoring = time.perf_counter()
        features = frozen_features(manifest, run.resolution)
        val_probs, test_probs, c, val_map = logistic_baseline(features, targets)
        thresholds, _ = tune_thresholds(targets["val"], val_probs)
        baseline = multilabel_report(targets["test"], test_probs, thresholds, run.class_names, paths)
        baseline_seconds = time.perf_counter() - scoring
        config_used = json.loads(json.dumps(open_run(result.run_dir).config, default=str))
        return {
            "benchmark": "multilabel",
            "machine": machine(),
            "data": str(data),
            "mosaics": len(manifest.records),
            "labels": run.class_names,
            "labels_per_mosaic": float(np.mean([len(r.labels) for r in manifest.records])),
            "split_sizes": manifest.split_sizes(),
            "resolution": run.resolution,
            "loss": loss,
            "time_budget": time_budget,
            "auto_decisions": config_used.get("auto_decisions"),
            "train_seconds": train_seconds,
            "baseline_seconds": baseline_seconds,
            "baseline_c": c,
            "baseline_val_map": val_map,
            "ours": {k: ours[k] for k in ("mAP", "macro_f1", "micro_f1", "subset_accuracy")},
            "baseline": {k: baseline[k] for k in ("mAP", "macro_f1", "micro_f1", "subset_accuracy")},
            "ours_per_label_ap": {k: v["average_precision"] for k, v in ours["per_label"].items()},
            "baseline_per_label_ap": {k: v["average_precision"] for k, v in baseline["per_label"].items()},
            "total_seconds": time.perf_counter() - started,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CIFAR_SUBSET, help="class folders the tiles come from")
    parser.add_argument("--mosaics", type=int, default=900, help="mosaics to build (default 900)")
    parser.add_argument("--time-budget", default="5m", help="the training run's --time-budget (default 5m)")
    parser.add_argument("--loss", default="bce", choices=("bce", "asl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    report = bench(args.data, args.mosaics, args.time_budget, args.loss, args.seed)
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average'][0]:.1f}")
    print(
        f"{report['mosaics']} mosaics of {args.data.name}, {len(report['labels'])} labels, "
        f"{report['labels_per_mosaic']:.2f} labels per mosaic, splits {report['split_sizes']}; lite0 at "
        f"{report['resolution']} px, loss {report['loss']}, {report['train_seconds']:.0f} s training"
    )
    for name in ("ours", "baseline"):
        r = report[name]
        what = "ours (fine_tune)" if name == "ours" else f"logistic regression (C={report['baseline_c']})"
        print(
            f"  {what:34s} test mAP {r['mAP']:.4f}  macro F1 {r['macro_f1']:.4f}  micro F1 {r['micro_f1']:.4f}  "
            f"exact set {r['subset_accuracy']:.4f}"
        )
    better = (
        report["ours"]["mAP"] > report["baseline"]["mAP"]
        and report["ours"]["macro_f1"] > report["baseline"]["macro_f1"]
    )
    print("ours is better on both" if better else "ours is NOT better on both: see the figures above")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
