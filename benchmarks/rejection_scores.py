"""Other rejection scores, tried on the outputs `bench_rejection.py --keep-arrays` saved (no training).

The served scores are `workbench.evaluation.rejection.SCORES`. This script asks whether a published alternative
would do clearly better on the same fine-tuned model's outputs before one is added to the product:

* energy, max-logit (Vaze et al. 2022) from the logits;
* ReAct (Sun et al. 2021): energy after clipping the pooled features at a percentile of the train split's;
* ViM (Wang et al. 2022): energy minus the scaled norm of the features' residual outside the top-D principal
  subspace of the train split's features (origin moved to -pinv(W')b), and that residual alone;
* kNN cosine (Sun et al. 2022) at several k;
* the served Mahalanobis scores, and sums of two scores z-normalised on the validation split.

Every AUROC is known test images against the held-back unknown half.

    python benchmarks/bench_rejection.py --data ../shared/data/cifar10-train-subset --keep-arrays /tmp/rej.npz
    python benchmarks/rejection_scores.py /tmp/rej.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTS = ("train", "val", "test", "unknown_fit", "unknown_test")


def scores(arrays) -> dict[str, dict[str, np.ndarray]]:
    """{score name: {part: scores}}, higher = more known."""
    from scipy.special import logsumexp

    from workbench.evaluation.ood import fit_gaussians, unit_norm

    kernel, bias = arrays["head_kernel"].astype(np.float64), arrays["head_bias"].astype(np.float64)
    features = {p: arrays[f"{p}_features"].astype(np.float64) for p in PARTS}
    logits = {p: arrays[f"{p}_logits"].astype(np.float64) for p in PARTS}
    out = {
        "energy": {p: logsumexp(logits[p], axis=1) for p in PARTS},
        "max_logit": {p: logits[p].max(axis=1) for p in PARTS},
    }
    for normalised, kind in ((False, "mahalanobis"), (True, "mahalanobis_l2")):
        gaussians = fit_gaussians(features["train"], arrays["train_labels"], kernel.shape[1], normalised=normalised)
        out[kind] = {p: gaussians.score(features[p], kind) for p in PARTS}
    for percentile in (90, 95, 99):
        clip = np.percentile(features["train"], percentile)
        out[f"react_p{percentile}"] = {
            p: logsumexp(np.minimum(features[p], clip) @ kernel + bias, axis=1) for p in PARTS
        }
    origin = -np.linalg.pinv(kernel.T) @ bias
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(features["train"] - origin, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    for dims in (64, 256, 512):
        null_space = eigenvectors[:, order[dims:]]

        def residual(p, null_space=null_space):
            return np.linalg.norm((features[p] - origin) @ null_space, axis=1)

        alpha = logits["train"].max(axis=1).mean() / residual("train").mean()
        out[f"vim_d{dims}"] = {p: logsumexp(logits[p], axis=1) - alpha * residual(p) for p in PARTS}
        out[f"vim_residual_d{dims}"] = {p: -residual(p) for p in PARTS}
    train_unit = unit_norm(features["train"])
    for k in (1, 10, 50):
        out[f"knn_k{k}"] = {p: np.sort(unit_norm(features[p]) @ train_unit.T, axis=1)[:, -k] for p in PARTS}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arrays", type=Path, help="the .npz of bench_rejection.py --keep-arrays")
    args = parser.parse_args(argv)

    from workbench.evaluation.rejection import auroc

    with np.load(args.arrays) as data:
        arrays = {key: data[key] for key in data.files}
    table = scores(arrays)

    def z(values):  # z-normalised on validation (known images only: what a user has)
        return {p: (v - values["val"].mean()) / values["val"].std() for p, v in values.items()}

    for first, second in (("mahalanobis", "energy"), ("mahalanobis_l2", "energy"), ("mahalanobis", "vim_d256")):
        a, b = z(table[first]), z(table[second])
        table[f"{first} + {second}"] = {p: a[p] + b[p] for p in PARTS}
    print(f"{'score':28s} AUROC known test vs unknown")
    for name, values in table.items():
        print(f"{name:28s} {auroc(values['test'], values['unknown_test']):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
