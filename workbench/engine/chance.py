"""Honest results (issue 12): is a validation accuracy clearly above chance, and are two accuracies apart?

An accuracy measured on n validation images is a binomial proportion, so it carries noise of about
sqrt(p(1 - p) / n). A model that only guesses scores the share of the largest class (1 / classes when
they are balanced), give or take that noise; with 30 validation images and 10 classes, anything up to
about 0.21 is still guessing. These pure functions decide when a result says nothing, so `train` and
the scaling search can say so instead of reporting a quiet success.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# How many standard errors above chance counts as "clearly" (about 97.7 % one-sided under the normal
# approximation of the binomial).
Z_CLEAR = 2.0


def chance_accuracy(class_counts: Sequence[int]) -> float:
    """The accuracy of always guessing the largest class of a split with these counts (1/C when balanced)."""
    total = sum(class_counts)
    if total <= 0:
        raise ValueError("chance_accuracy needs at least one image")
    return max(class_counts) / total


def accuracy_noise(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on `n` images.

    Agresti-Coull's adjusted proportion (two successes and two failures added) keeps it above zero at
    accuracies of 0 and 1, where the plain estimate would claim no noise at all.
    """
    if n <= 0:
        raise ValueError(f"accuracy_noise needs n >= 1 images, got {n}")
    adjusted = (accuracy * n + 2) / (n + 4)
    return math.sqrt(adjusted * (1 - adjusted) / (n + 4))


def chance_band(class_counts: Sequence[int], z: float = Z_CLEAR) -> float:
    """The highest accuracy still within `z` standard errors of guessing on a split with these counts."""
    n = sum(class_counts)
    p0 = chance_accuracy(class_counts)
    return p0 + z * math.sqrt(p0 * (1 - p0) / n)


def clearly_above_chance(accuracy: float, class_counts: Sequence[int], z: float = Z_CLEAR) -> bool:
    """Whether `accuracy` on a split with `class_counts` images per class is beyond the noise of guessing."""
    return accuracy > chance_band(class_counts, z)


def difference_noise(accuracy: float, n: int) -> float:
    """The standard error of the difference between two accuracies near `accuracy`, each on `n` images."""
    return math.sqrt(2) * accuracy_noise(accuracy, n)


def chance_message(accuracy: float, class_counts: Sequence[int]) -> str:
    """`best validation accuracy 0.100 is within the noise of guessing (...)`: the common first sentence."""
    n = sum(class_counts)
    return (
        f"best validation accuracy {accuracy:.3f} is not clearly above chance: always guessing the largest class "
        f"scores {chance_accuracy(class_counts):.3f}, and on {n} validation images of {len(class_counts)} classes "
        f"anything up to {chance_band(class_counts):.3f} is within the noise"
    )


def train_warning(
    best_val_accuracy: float | None,
    val_counts: Sequence[int],
    *,
    train_counts: Sequence[int],
    epochs: int,
    fine_tune_epochs: int | None,
    image_size: int,
    learning_rate: float,
) -> str | None:
    """A warning naming the likely causes when a run's best validation accuracy is at chance; else None.
    `fine_tune_epochs` None: the run trained from scratch, in one phase of `epochs`."""
    if best_val_accuracy is None or sum(val_counts) == 0 or clearly_above_chance(best_val_accuracy, val_counts):
        return None
    epoch_cause = (
        f"too few epochs ({epochs} from scratch; raise --epochs)"
        if fine_tune_epochs is None
        else f"too few epochs ({epochs} head + {fine_tune_epochs} fine-tune; raise --epochs / --fine-tune-epochs)"
    )
    causes = [
        f"too few images per class ({min(train_counts)} to {max(train_counts)} for training; tens per class at least)",
        epoch_cause,
        f"the resolution ({image_size} px; try the variant's own with --image-size)",
        f"the learning rate ({learning_rate:g}; `workbench lr-find DATA` suggests one)",
    ]
    return f"{chance_message(best_val_accuracy, val_counts)}. Likely causes: " + "; ".join(causes) + "."


def search_warning(val_accuracies: Sequence[float], val_counts: Sequence[int], fix: str | None = None) -> str | None:
    """Why a scaling search's winner means nothing, or None when it is clearly the best.

    The best candidate must be clearly above chance, and ahead of the runner-up by more than the noise of
    the difference of two accuracies on the validation images (one standard error of it). `fix`: what the
    caller's user can raise to tell them apart (default: the scaling search's options).
    """
    if not val_accuracies or sum(val_counts) == 0:
        return None
    ranked = sorted(val_accuracies, reverse=True)
    n = sum(val_counts)
    raise_what = fix or (
        "raise --val-per-class and --train-per-class (more images per class), --epochs, or --base-resolution"
    )
    if not clearly_above_chance(ranked[0], val_counts):
        return f"{chance_message(ranked[0], val_counts)}; the ranking of candidates is noise. To fix it, {raise_what}."
    if len(ranked) > 1 and ranked[0] - ranked[1] <= difference_noise(ranked[0], n):
        return (
            f"the best two candidates score {ranked[0]:.3f} and {ranked[1]:.3f} on {n} validation images, a gap "
            f"within the noise of the measurement (±{difference_noise(ranked[0], n):.3f}); the winner may be luck. "
            f"To tell them apart, {raise_what}."
        )
    return None
