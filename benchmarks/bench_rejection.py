"""Calibration and rejection on CIFAR-10: train on 5 classes, treat the other 5 as images of no class.

Lite0 (ImageNet weights) is trained by `fine_tune` with the default recipe (`--recipe auto`) on the 5 known classes
(airplane, automobile, bird, cat, deer), under `--time-budget` (default 5m, so the whole benchmark stays near 10
minutes of CPU). The 5 unknown classes (dog, frog, horse, ship, truck) are split in two halves per class: the
first half is the `--unknown-dir` a false-accept threshold is set on, the second is only ever scored.

Then the logits and pooled features of the run's train, validation and test splits and of both unknown halves are
computed once (one forward pass each, with the final model), and the same functions `workbench.evaluation.calibrate`
and `evaluate` use give the figures:

* the temperature fitted on validation, and the test split's ECE (15 bins) before and after it;
* AUROC of known test images against unknown (second half), for every score of
  `workbench.evaluation.rejection.SCORES`: max-softmax and energy from the logits, the Mahalanobis scores from the
  features (Gaussians fitted on the train split's), and, for reference only, a kNN cosine score (not served);
* per score and per target (accuracy:0.95, accuracy:0.99 and coverage:0.9 from validation alone; false-accept:0.05
  from the first unknown half),
  the threshold, and on the test split: the share of known images accepted, the accuracy on them, and the share
  of unknown images rejected.

    python benchmarks/bench_rejection.py --data ../shared/data/cifar10-train-subset --json /tmp/rejection.json
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

KNOWN = ("airplane", "automobile", "bird", "cat", "deer")
UNKNOWN = ("dog", "frog", "horse", "ship", "truck")
TARGETS = ("accuracy:0.95", "accuracy:0.99", "coverage:0.9", "false-accept:0.05")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def link_classes(data: Path, dest: Path) -> tuple[Path, Path, Path]:
    """`dest/known/<class>/`, and the unknown classes' images halved into `dest/unknown-fit` and `dest/unknown-test`
    (links, sorted file order, so every run of the benchmark uses the same halves)."""
    for name in KNOWN + UNKNOWN:
        files = sorted(p for p in (data / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"{data / name}: no images; pass --data with the CIFAR-10 class folders")
        parts = {"known": files} if name in KNOWN else {"unknown-fit": files[::2], "unknown-test": files[1::2]}
        for part, chosen in parts.items():
            (dest / part / name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                os.symlink(f.resolve(), dest / part / name / f.name)
    return dest / "known", dest / "unknown-fit", dest / "unknown-test"


KNN_K = 10  # kNN reference: the k-th nearest training image (Sun et al. 2022 scale k with the training set)


def knn_score(train_features, features, k: int = KNN_K):
    """Reference only (not a served score): cosine similarity to the k-th nearest L2-normalised training feature."""
    import numpy as np

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(features) @ unit(train_features).T
    return np.sort(similarity, axis=1)[:, -k]


def figures(val, test, unknown_fit, unknown_test, train) -> dict:
    """Every figure from the outputs: (logits, labels, features) of val, test and train, (logits, features) of the
    two unknown halves. The feature Gaussians are fitted on the train split's features."""
    from workbench.evaluation.calibration import expected_calibration_error, fit_temperature, softmax
    from workbench.evaluation.ood import FEATURE_SCORES, fit_gaussians, normalised_for
    from workbench.evaluation.rejection import LOGIT_SCORES, auroc, score, threshold_from_scores

    (val_logits, val_labels, _), (test_logits, test_labels, test_features) = val, test
    temperature = fit_temperature(val_logits, val_labels)
    correct = test_logits.argmax(1) == test_labels
    val_correct = val_logits.argmax(1) == val_labels
    report = {
        "temperature": temperature,
        "test_accuracy": float(correct.mean()),
        "ece_test_before": expected_calibration_error(softmax(test_logits), test_labels),
        "ece_test_after": expected_calibration_error(softmax(test_logits, temperature), test_labels),
        "ece_val_before": expected_calibration_error(softmax(val_logits), val_labels),
        "ece_val_after": expected_calibration_error(softmax(val_logits, temperature), val_labels),
        "auroc": {},
        "thresholds": [],
    }
    # For reference: the energy score at T = 1 (the raw logits' logsumexp), what Liu et al. use.
    report["auroc_energy_t1"] = auroc(score(test_logits, 1.0, "energy"), score(unknown_test[0], 1.0, "energy"))
    fitted = {n: fit_gaussians(train[2], train[1], test_logits.shape[1], normalised=n) for n in (False, True)}
    # (val, test, unknown fit, unknown test) scores of each score
    scored = {
        kind: [score(part[0], temperature, kind) for part in (val, test, unknown_fit, unknown_test)]
        for kind in LOGIT_SCORES
    }
    for kind in FEATURE_SCORES:
        gaussians = fitted[normalised_for(kind)]
        scored[kind] = [gaussians.score(part[-1], kind) for part in (val, test, unknown_fit, unknown_test)]
    report["auroc_knn_reference"] = auroc(knn_score(train[2], test_features), knn_score(train[2], unknown_test[1]))
    for kind, (val_scores, known_scores, fit_scores, unknown_scores) in scored.items():
        report["auroc"][kind] = auroc(known_scores, unknown_scores)
        for target in TARGETS:
            chosen = threshold_from_scores(
                val_scores, val_correct, kind=kind, reject="auto", target=target, unknown_scores=fit_scores
            )
            row = {"score": kind, "target": target, "threshold": chosen.value, "warning": chosen.warning}
            if chosen.value is not None:
                accept = known_scores >= chosen.value
                row.update(
                    accepted_known=float(accept.mean()),
                    accuracy_accepted=float(correct[accept].mean()) if accept.any() else None,
                    rejected_unknown=float((unknown_scores < chosen.value).mean()),
                )
            report["thresholds"].append(row)
    return report


def save_arrays(path: Path, parts: dict, model_path) -> None:
    """`parts`' arrays as `<part>_logits`, `<part>_features` (and `<part>_labels`), plus the head's Dense weights
    (`head_kernel`, `head_bias`), in one .npz."""
    import keras
    import numpy as np

    arrays = {}
    for name, outputs in parts.items():
        keys = ("logits", "labels", "features") if len(outputs) == 3 else ("logits", "features")
        arrays.update({f"{name}_{key}": np.asarray(value) for key, value in zip(keys, outputs, strict=True)})
    kernel, bias = keras.saving.load_model(model_path, compile=False).get_layer("predictions").get_weights()
    np.savez(path, head_kernel=kernel, head_bias=bias, **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CIFAR_SUBSET, help="CIFAR-10 class folders")
    parser.add_argument("--time-budget", default="5m", help="the training run's --time-budget (default 5m)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--keep-arrays",
        type=Path,
        default=None,
        help="also save the outputs scored (.npz: logits, labels, features of every part, the head's weights) "
        "to try other scores on them without training again",
    )
    args = parser.parse_args(argv)

    import numpy as np
    from bench_step_throughput import machine

    from pipelines import Manifest
    from workbench.engine import RunConfig, fine_tune
    from workbench.evaluation.calibrate import folder_logits_features, split_logits_features
    from workbench.serving.model_files import open_run

    work = Path(tempfile.mkdtemp(prefix="bench-rejection-"))
    started = time.perf_counter()
    try:
        known, unknown_fit, unknown_test = link_classes(args.data, work)

        def listen(event):
            if event["type"] == "epoch":
                print(f"  phase {event['phase']} epoch {event['epoch']:2d}  val_acc {event['val_accuracy']:.4f}")
            elif event["type"] == "plan":
                print("\n".join(f"  auto: {line}" for line in event["decisions"]), flush=True)

        config = RunConfig(data=str(known), variant="lite0", out=str(work / "runs"), time_budget=args.time_budget)
        result = fine_tune(config, listeners=[listen])
        train_seconds = time.perf_counter() - started
        run = open_run(result.run_dir)
        manifest = Manifest.load(run.manifest_path)
        index = {name: i for i, name in enumerate(run.class_names)}

        def split(name):
            labels = [index[r.label] for r in manifest.split_records(name)]
            logits, features = split_logits_features(run, manifest, [name])
            return logits, np.asarray(labels), features

        scoring = time.perf_counter()
        parts = {
            "val": split("val"),
            "test": split("test"),
            "unknown_fit": folder_logits_features(run, unknown_fit),
            "unknown_test": folder_logits_features(run, unknown_test),
            "train": split("train"),  # the fine-tuned model's features: phase 1's cache holds the frozen backbone's
        }
        if args.keep_arrays:
            save_arrays(args.keep_arrays, parts, result.model_path)
        report = figures(*parts.values())
        report["scoring_seconds"] = time.perf_counter() - scoring
        report.update(
            {
                "benchmark": "rejection",
                "machine": machine(),
                "data": str(args.data),
                "known": list(KNOWN),
                "unknown": list(UNKNOWN),
                "resolution": run.resolution,
                "split_sizes": manifest.split_sizes(),
                "unknown_images": {
                    "fit": len(list(unknown_fit.rglob("*.*"))),
                    "test": len(list(unknown_test.rglob("*.*"))),
                },
                "best_val_accuracy": result.best_val_accuracy,
                "time_budget": args.time_budget,
                "train_seconds": train_seconds,
                "total_seconds": time.perf_counter() - started,
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average'][0]:.1f}")
    print(
        f"lite0 at {report['resolution']} px, {report['train_seconds']:.0f} s training, "
        f"{report['total_seconds']:.0f} s in all; test accuracy {report['test_accuracy']:.4f}"
    )
    print(
        f"temperature {report['temperature']:.3f}: test ECE {report['ece_test_before']:.4f} before, "
        f"{report['ece_test_after']:.4f} after (val {report['ece_val_before']:.4f} -> {report['ece_val_after']:.4f})"
    )
    print(
        "AUROC known vs unknown: "
        + ", ".join(f"{k} {v:.4f}" for k, v in report["auroc"].items())
        + f" (energy at T = 1: {report['auroc_energy_t1']:.4f}; reference, not served: "
        + f"kNN cosine k={KNN_K} {report['auroc_knn_reference']:.4f})"
    )
    print(f"{'score':20s} {'target':18s} {'threshold':>10s} {'known kept':>10s} {'acc kept':>9s} {'unk rejected':>12s}")
    for row in report["thresholds"]:
        if row["threshold"] is None:
            print(f"{row['score']:20s} {row['target']:18s} not applied: {row['warning']}")
            continue
        accuracy = row["accuracy_accepted"]
        print(
            f"{row['score']:20s} {row['target']:18s} {row['threshold']:10.4g} {row['accepted_known']:10.1%} "
            f"{'-' if accuracy is None else f'{accuracy:.4f}':>9s} {row['rejected_unknown']:12.1%}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
