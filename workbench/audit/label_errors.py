"""Likely label errors: confident learning on out-of-sample probabilities of linear heads.

Each image's class probabilities come from a logistic-regression head trained on the OTHER folds of a
stratified K-fold split of the cached features (scikit-learn's `cross_val_predict`), so no image is judged
by a head that saw its own label. cleanlab's `find_label_issues` (confident learning: per-class thresholds
at the average self-confidence, off-diagonal counts of the confident joint) picks the likely errors; they
are ranked by cleanlab's self-confidence quality score, lowest first, and the suggestion is the head's
most probable class.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FOLDS = 5
# Stratified K-fold needs every class in every fold, so at least FOLDS images per class.
MIN_PER_CLASS = FOLDS
# The head: standardised features, projected on their first PCA_COMPONENTS principal components, then a strongly
# L2-regularised logistic regression. On benchmarks/bench_audit.py (CIFAR-10, 4,100 images, lite0's 1280
# features) this found as many planted errors as the head on all 1280 features (recall 0.805 against 0.785 at
# precision >= 0.6) in half the time.
PCA_COMPONENTS = 128
DEFAULT_C = 0.02


class TooFewImages(ValueError):
    """The data is too small for cross-validated label checks; the message names the classes and the fix."""


@dataclasses.dataclass(frozen=True)
class LabelIssue:
    index: int  # row of the audit
    given: int  # class index of the label
    suggested: int  # class index the out-of-sample head prefers
    quality: float  # cleanlab's self-confidence label quality (probability of the given label), low = suspicious
    suggested_probability: float


def check_enough(labels: np.ndarray, classes: list[str]) -> None:
    """Raise TooFewImages when a class has fewer than MIN_PER_CLASS images."""
    counts = np.bincount(labels, minlength=len(classes))
    small = [f"{classes[c]!r} ({counts[c]})" for c in range(len(classes)) if counts[c] < MIN_PER_CLASS]
    if small:
        raise TooFewImages(
            f"label errors need at least {MIN_PER_CLASS} images in every class for {FOLDS}-fold cross-validation; "
            f"too few in {', '.join(small)}. Add images to those classes; duplicates, outliers and statistics "
            "were still checked"
        )


def out_of_sample_probabilities(
    x: np.ndarray, labels: np.ndarray, *, c: float = DEFAULT_C, seed: int = 0
) -> np.ndarray:
    """(N, C) class probabilities of each row from a logistic-regression head fitted without that row's fold.

    BLAS runs on one thread here: these matrices are small, and on a busy two-core machine OpenBLAS's spinning
    threads made the same fits 30x slower (118 s against 4 s for 4,100 images, measured)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train_rows = len(x) - len(x) // FOLDS  # the smallest training fold
    components = max(1, min(PCA_COMPONENTS, x.shape[1], train_rows - 1))
    head = make_pipeline(StandardScaler(), PCA(components, random_state=seed), LogisticRegression(C=c, max_iter=500))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        return cross_val_predict(head, x, labels, cv=folds, method="predict_proba")


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> list[LabelIssue]:
    """The likely label errors, most suspicious first (cleanlab's confident learning)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    ranked = cleanlab_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    suggested = probabilities.argmax(axis=1)
    return [
        LabelIssue(
            index=int(i),
            given=int(labels[i]),
            suggested=int(suggested[i]),
            quality=float(quality[i]),
            suggested_probability=float(probabilities[i, suggested[i]]),
        )
        for i in ranked
    ]
