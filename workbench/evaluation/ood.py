"""Feature-space rejection scores: Gaussians fitted to the pooled backbone features of the training split.

A 5-class model's outputs say little about a dog when cat is a class: the softmax and the logits only measure
the directions the head separates. The pooled features (`avg_pool`, D numbers) keep the rest, so a distance to
where the training images lie tells near unknowns apart better (Lee et al. 2018; Ren et al. 2021). Two scores,
higher = more known, as `workbench.evaluation.rejection`'s:

* `mahalanobis`: -min_k (x - mu_k)' P (x - mu_k), with class means mu_k and one shared (tied) covariance whose
  inverse P is fitted with Ledoit-Wolf shrinkage (D is about the number of training images, so the plain sample
  covariance is singular or nearly);
* `relative_mahalanobis` (Ren et al. 2021): the same minus the distance to one Gaussian fitted to all training
  features, (x - mu_0)' P_0 (x - mu_0), which cancels the part of the distance every class shares;
* `mahalanobis_l2` (Mueller & Hein 2025, "Mahalanobis++"): `mahalanobis` on features scaled to unit L2 norm
  first (for the fit and for scoring): the pooled features' norms vary a lot and break the shared-covariance
  assumption.

The distances are computed as expanded quadratic forms around mu_0 (`FeatureGaussians.score`), the formula the
exported graphs use (`workbench.serving.calibrated`), so NumPy and the graphs agree to float32 rounding.
The statistics are `ood.npz` in the run directory (`save`/`load`; `workbench.evaluation.calibrate.OOD_FILE`),
beside `calibration.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURE_SCORES = ("mahalanobis", "relative_mahalanobis", "mahalanobis_l2")
_NORMALISED = ("mahalanobis_l2",)  # the scores whose Gaussians are fitted on (and score) unit-norm features
_ARRAYS = ("means", "precision", "background_mean", "background_precision", "normalised")


@dataclass(frozen=True)
class FeatureGaussians:
    """Class means (K, D), their shared precision matrix (D, D), and the background Gaussian's mean (D,) and
    precision (D, D), all float64; `normalised`: fitted on unit-norm features (`normalised_for`), which are then
    what is scored."""

    means: np.ndarray
    precision: np.ndarray
    background_mean: np.ndarray
    background_precision: np.ndarray
    normalised: bool = False

    def terms(self) -> dict[str, np.ndarray]:
        """The constants of the expanded distances, around the background mean mu_0 (z = x - mu_0):
        d_k = z'Pz - 2 z'P m_k + m_k'P m_k with m_k = mu_k - mu_0, and d_0 = z'P_0 z. `cross` is P m_k as (D, K),
        `offset` is m_k'P m_k as (K,)."""
        centred = self.means - self.background_mean
        cross = self.precision @ centred.T
        return {"cross": cross, "offset": np.einsum("kd,dk->k", centred, cross)}

    def score(self, features: np.ndarray, kind: str) -> np.ndarray:
        """The score `kind` (`FEATURE_SCORES`) of each row of `features` (N, D); higher = more known."""
        if kind not in FEATURE_SCORES:
            raise ValueError(f"unknown feature score {kind!r}; use one of {', '.join(FEATURE_SCORES)}")
        if normalised_for(kind) != self.normalised:
            raise ValueError(f"the {kind} score needs Gaussians fitted with normalised={normalised_for(kind)}")
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.means.shape[1]:
            raise ValueError(
                f"features of shape {features.shape} do not match the fitted Gaussians' {self.means.shape[1]} "
                "dimensions; compute them with the run's own model (its avg_pool output)"
            )
        if self.normalised:
            features = unit_norm(features)
        terms = self.terms()
        z = features - self.background_mean
        quadratic = np.einsum("nd,nd->n", z @ self.precision, z)
        # -min_k d_k = max_k (2 z'P m_k - m_k'P m_k) - z'Pz
        value = (2.0 * (z @ terms["cross"]) - terms["offset"]).max(axis=1) - quadratic
        if kind == "relative_mahalanobis":
            value = value + np.einsum("nd,nd->n", z @ self.background_precision, z)
        return value


def normalised_for(kind: str) -> bool:
    """Whether the score `kind` works on unit-norm features."""
    return kind in _NORMALISED


def unit_norm(features: np.ndarray) -> np.ndarray:
    """Each row scaled to L2 norm 1 (a zero row stays zero)."""
    return features / np.sqrt(np.maximum((features * features).sum(axis=1, keepdims=True), NORM_FLOOR))


NORM_FLOOR = 1e-12  # squared norm below which a row is not scaled up (the graph uses the same floor)


def fit_gaussians(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, normalised: bool = False
) -> FeatureGaussians:
    """Class means and Ledoit-Wolf shrunk tied precision of `features` (N, D) with integer `labels` (N,), and
    the background Gaussian of all of them, on unit-norm features when `normalised`. Every class needs at least
    one image."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, dtype=np.float64)
    if normalised:
        features = unit_norm(features)
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=num_classes)
    if len(features) != len(labels) or (counts == 0).any():
        missing = [str(k) for k in np.flatnonzero(counts == 0)]
        raise ValueError(
            f"fitting feature Gaussians needs every class in the training features; classes {', '.join(missing)} "
            f"have none ({len(features)} features, {len(labels)} labels). Train on a split with every class"
        )
    means = np.stack([features[labels == k].mean(axis=0) for k in range(num_classes)])
    tied = LedoitWolf(assume_centered=True).fit(features - means[labels])
    background = LedoitWolf().fit(features)
    return FeatureGaussians(means, tied.precision_, background.location_, background.precision_, normalised)


def save(path: str | Path, gaussians: FeatureGaussians) -> None:
    """Write the statistics to `path` (`calibrate.OOD_FILE` in a run) atomically."""
    from pipelines.files import atomic_path

    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{name: getattr(gaussians, name) for name in _ARRAYS})


def load(path: str | Path) -> FeatureGaussians:
    """The statistics `save` wrote, or ValueError naming the file and how to write it again."""
    path = Path(path)
    try:
        with np.load(path) as data:
            arrays = {name: np.asarray(data[name], dtype=np.float64) for name in _ARRAYS[:-1]}
            arrays["normalised"] = bool(data["normalised"])
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{path}: not the feature statistics of a feature rejection score ({error}); fit them again with "
            "`workbench evaluate RUN --reject auto --reject-score mahalanobis`"
        ) from None
    k, d = arrays["means"].shape if arrays["means"].ndim == 2 else (0, 0)
    if arrays["precision"].shape != (d, d) or arrays["background_precision"].shape != (d, d) or k < 1:
        raise ValueError(f"{path}: inconsistent shapes {[a.shape for a in arrays.values()]}; fit them again")
    return FeatureGaussians(**arrays)
