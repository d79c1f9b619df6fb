"""The step after training that fits calibration and rejection on the validation split: `calibration.json`.

```python
from workbench.evaluation.calibrate import calibrate_run, read_calibration
record = calibrate_run("runs/r1")             # the run's own --reject options (config.yaml), or RejectConfig()
calibration = read_calibration("runs/r1")     # what exports and `workbench predict` apply; None before
```

`calibration.json` is the one record of the fitted temperature and threshold: evaluation reads it, every export
puts its numbers into the graph and the model card, and a run without it exports as before (temperature 1, no
rejection). It is also announced as a `calibration` event in the run's events.jsonl.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workbench.evaluation.ood import FeatureGaussians

CALIBRATION_FILE = "calibration.json"
OOD_FILE = "ood.npz"  # the feature scores' statistics (`workbench.evaluation.ood`), beside calibration.json
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


@dataclass(frozen=True)
class Calibration:
    """What serving applies: probabilities softmax(logits / temperature); `UNKNOWN_INDEX` where the `score` is
    below `threshold` (None: no rejection). A feature score (`workbench.evaluation.ood.FEATURE_SCORES`) also needs
    `gaussians`, the statistics of the run's `ood.npz`, and the pooled features beside the logits."""

    temperature: float = 1.0
    score: str = "max_softmax"
    threshold: float | None = None
    gaussians: FeatureGaussians | None = field(default=None, compare=False, repr=False)

    @property
    def needs_features(self) -> bool:
        """Whether rejecting takes the pooled features too (a feature score with a threshold)."""
        from workbench.evaluation.ood import FEATURE_SCORES

        return self.threshold is not None and self.score in FEATURE_SCORES

    def scores(self, logits: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """The rejection score of each image from its logits (N, C) and, for a feature score, features (N, D)."""
        from workbench.evaluation.ood import FEATURE_SCORES
        from workbench.evaluation.rejection import score

        if self.score not in FEATURE_SCORES:
            return score(logits, self.temperature, self.score)
        if self.gaussians is None or features is None:
            raise ValueError(f"the {self.score} score needs the run's feature statistics ({OOD_FILE}) and features")
        return self.gaussians.score(features, self.score)

    def decide(self, logits: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Class index per row, `UNKNOWN_INDEX` below the threshold: what the exported graphs compute."""
        from workbench.evaluation.rejection import UNKNOWN_INDEX

        index = np.asarray(logits).argmax(axis=1)
        if self.threshold is None:
            return index
        return np.where(self.scores(logits, features) >= self.threshold, index, UNKNOWN_INDEX)

    def to_card(self) -> dict:
        """The model card's `calibration` entry."""
        from workbench.evaluation.rejection import UNKNOWN_INDEX, UNKNOWN_NAME

        return {
            "temperature": self.temperature,
            "score": self.score,
            "threshold": self.threshold,
            "unknown": {"class_name": UNKNOWN_NAME, "class_index": UNKNOWN_INDEX}
            if self.threshold is not None
            else None,
            # A feature score's statistics: constants of the SavedModel and TFLite graphs, a file beside a .keras
            **(
                {"feature_statistics": {"file": OOD_FILE, "shape": list(self.gaussians.means.shape)}}
                if self.needs_features and self.gaussians is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        rejection = values.get("rejection") or {}
        return cls(
            temperature=float(values["temperature"]),
            score=rejection.get("score") or "max_softmax",
            threshold=None if rejection.get("value") is None else float(rejection["value"]),
        )

    def with_gaussians_from(self, folder: Path) -> Calibration:
        """Self, with the feature statistics of `folder`'s `OOD_FILE` when the score needs them."""
        import dataclasses

        from workbench.evaluation import ood

        if not self.needs_features:
            return self
        path = Path(folder) / OOD_FILE
        if not path.is_file():
            raise ValueError(
                f"{folder}: rejection uses the {self.score} score but {OOD_FILE} (its feature statistics) is "
                "missing; fit it again with `workbench evaluate RUN --reject auto`, then export again"
            )
        return dataclasses.replace(self, gaussians=ood.load(path))


def read_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's fitted calibration, or None when it has no `calibration.json` (runs from before, or no val split)."""
    import json

    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not a calibration record ({error}); fit it again with `workbench evaluate RUN --reject off` "
            "(or the --reject you want)"
        ) from None
    return calibration.with_gaussians_from(Path(run_dir))


def image_files(folder: str | Path) -> list[Path]:
    """The image files under `folder` (recursively), sorted, or ValueError when there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--unknown-dir {folder}: no image files (JPEG, PNG, GIF, BMP or WebP) under it")
    return files


def split_logits(run, manifest, splits: list[str], batch_size: int = 32) -> np.ndarray:
    """The logits (N, C) of the records of `splits` in manifest order, through the evaluation pixels."""
    from pipelines import make_datasets
    from workbench.engine.heads import logits_model

    datasets = make_datasets(manifest, image_size=run.resolution, batch_size=batch_size, augment="none")
    model = logits_model(run.model)
    return np.concatenate([model.predict(datasets.plain(s), verbose=0) for s in splits], axis=0).astype(np.float64)


def split_logits_features(run, manifest, splits: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`split_logits`, and the pooled features (N, D) of the same images from the same forward pass."""
    from pipelines import make_datasets
    from workbench.engine.heads import logits_and_features_model

    datasets = make_datasets(manifest, image_size=run.resolution, batch_size=batch_size, augment="none")
    model = logits_and_features_model(run.model)
    parts = [model.predict(datasets.plain(s), verbose=0) for s in splits]
    return tuple(np.concatenate([p[i] for p in parts], axis=0).astype(np.float64) for i in (0, 1))


def folder_logits(run, folder: str | Path, batch_size: int = 32) -> np.ndarray:
    """The logits of every image under `folder`, decoded and resized as `workbench predict` does."""
    from workbench.engine.heads import logits_model
    from workbench.serving.imaging import load_files

    images = load_files([str(p) for p in image_files(folder)], run.resolution)
    return logits_model(run.model).predict(images, batch_size=batch_size, verbose=0).astype(np.float64)


def folder_logits_features(run, folder: str | Path, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`folder_logits`, and the pooled features of the same images from the same forward pass."""
    from workbench.engine.heads import logits_and_features_model
    from workbench.serving.imaging import load_files

    images = load_files([str(p) for p in image_files(folder)], run.resolution)
    logits, features = logits_and_features_model(run.model).predict(images, batch_size=batch_size, verbose=0)
    return logits.astype(np.float64), features.astype(np.float64)


def cached_train_features(run_dir: Path, val_features: np.ndarray, num_train: int) -> np.ndarray | None:
    """The train split's pooled features from phase 1's cache (`checkpoints/features.npz`, manifest order) when
    they are still the final model's, else None (compute them: one forward pass over the train split).

    They are when the cache's validation features equal `val_features`, just computed with the final model: a
    run that fine-tuned the backbone afterwards (phase 2) fails this check, a head-only run passes it. The
    tolerance allows for the cache having been computed under mixed precision."""
    from workbench.engine.phases import FEATURES_FILE
    from workbench.engine.rundir import CHECKPOINTS_DIR

    path = Path(run_dir) / CHECKPOINTS_DIR / FEATURES_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            cached_val, train = data["val_x"], data["train_x"]
    except (OSError, ValueError, KeyError):
        return None
    if cached_val.shape != val_features.shape or len(train) != num_train:
        return None
    scale = max(float(np.abs(val_features).max()), 1e-6)
    if not np.allclose(cached_val, val_features, rtol=1e-2, atol=1e-2 * scale):
        return None
    return train.astype(np.float64)


def run_settings(run) -> object:
    """The run's own rejection options (config.yaml's `rejection`), or the defaults."""
    from workbench.engine.config import RejectConfig

    return RejectConfig.from_dict(run.config.get("rejection") or {})


def calibrate_run(run_dir: str | Path, settings=None, *, batch_size: int = 32) -> dict | None:
    """Fit the temperature on the run's validation split, then the rejection threshold `settings` ask for
    (`RejectConfig`; default the run's own options); write `calibration.json` and a `calibration` event.

    Returns the record, or None when the run has no validation images (nothing is written then: exports
    stay uncalibrated). A threshold that would reject every validation image, or none, is not applied; the
    record's `warning` (also in the event) says so.
    """
    from pipelines import Manifest
    from pipelines.files import atomic_write_json
    from workbench.engine.events import EventWriter
    from workbench.evaluation.calibration import ECE_BINS, expected_calibration_error, fit_temperature, softmax
    from workbench.evaluation.ood import FEATURE_SCORES, fit_gaussians, normalised_for
    from workbench.evaluation.ood import save as save_gaussians
    from workbench.evaluation.rejection import SCORES, UNKNOWN_NAME, auroc, parse_reject, score, threshold_from_scores
    from workbench.serving.model_files import open_run

    run = open_run(run_dir)
    settings = (settings or run_settings(run)).validate()
    reject = parse_reject(settings.reject)
    if reject != "off" and UNKNOWN_NAME in run.class_names:
        raise ValueError(
            f"{run.path}: a class is named {UNKNOWN_NAME!r}, which rejection answers for images of no class; "
            "rename that class folder, or train with --reject off"
        )
    if run.manifest_path is None:
        return None
    manifest = Manifest.load(run.manifest_path)
    if manifest.multi_label:
        raise ValueError(
            f"{run.path} is a multi-label run: temperature scaling and rejection are for single-label runs (a "
            "multi-label model answers each label with its own threshold, thresholds.json); drop the --reject options"
        )
    if not manifest.split_records("val"):
        return None
    index = {name: i for i, name in enumerate(run.class_names)}
    labels = np.asarray([index[r.label] for r in manifest.split_records("val")])
    kind = "max_softmax" if isinstance(reject, float) else settings.reject_score
    # The feature scores need the pooled features, and Gaussians fitted on the train split's: the final model's,
    # so phase 1's cache only while no fine-tuning changed the backbone (`cached_train_features`), else one more
    # forward pass. With images of no class they are computed whatever the score: every score's AUROC is reported.
    with_features = (kind in FEATURE_SCORES and reject != "off") or bool(settings.unknown_dir)
    fitted: dict[bool, FeatureGaussians] = {}  # by `normalised`: the two fits the feature scores use
    features = unknown_features = None
    if with_features:
        logits, features = split_logits_features(run, manifest, ["val"], batch_size)
        train_labels = np.asarray([index[r.label] for r in manifest.split_records("train")])
        train_features = cached_train_features(run.path, features, len(train_labels))
        if train_features is None:
            train_features = split_logits_features(run, manifest, ["train"], batch_size)[1]
        for normalised in (False, True):
            fitted[normalised] = fit_gaussians(
                train_features, train_labels, len(run.class_names), normalised=normalised
            )
    else:
        logits = split_logits(run, manifest, ["val"], batch_size)
    temperature = fit_temperature(logits, labels)
    unknown = None
    if settings.unknown_dir:
        unknown, unknown_features = folder_logits_features(run, settings.unknown_dir, batch_size)

    def scores_of(kind: str, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        if kind in FEATURE_SCORES:
            return fitted[normalised_for(kind)].score(features, kind)
        return score(logits, temperature, kind)

    threshold = threshold_from_scores(
        # (rejection off with a feature score and no images of no class: nothing is fitted, the scores are unused)
        scores_of(kind, logits, features) if fitted or kind not in FEATURE_SCORES else np.zeros(len(labels)),
        logits.argmax(axis=1) == labels,
        kind=kind,
        reject=reject,
        target=settings.reject_target,
        unknown_scores=None if unknown is None else scores_of(kind, unknown, unknown_features),
    )
    record = {
        "temperature": temperature,
        "split": "val",
        "num_images": len(labels),
        "bins": ECE_BINS,
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
        "rejection": {**threshold.to_dict(), "reject": settings.reject},
        "unknown": None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if unknown is not None:
        record["unknown"] = {
            "dir": str(settings.unknown_dir),
            "num_images": len(unknown),
            "auroc": {
                kind: auroc(scores_of(kind, logits, features), scores_of(kind, unknown, unknown_features))
                for kind in SCORES
            },
        }
    # The statistics first: a calibration.json naming a feature score always has its ood.npz beside it.
    ood_path = run.path / OOD_FILE
    if threshold.value is not None and kind in FEATURE_SCORES:
        save_gaussians(ood_path, fitted[normalised_for(kind)])
    elif ood_path.exists():
        ood_path.unlink()  # a stale one from an earlier fit: no record names it any more
    atomic_write_json(run.path / CALIBRATION_FILE, record)
    EventWriter(run.path / "events.jsonl").emit(
        "calibration",
        temperature=temperature,
        ece_before=record["ece_before"],
        ece_after=record["ece_after"],
        score=threshold.score,
        threshold=threshold.value,
        accepted=threshold.accepted,
        **({"warning": threshold.warning} if threshold.warning else {}),
    )
    return record


def settings_for(run_dir: str | Path, overrides: dict | None = None):
    """The run's own rejection options (its config.yaml) with `overrides` by option name applied, validated."""
    import yaml

    from workbench.engine.config import RejectConfig, with_overrides

    path = Path(run_dir) / "config.yaml"
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    own = RejectConfig.from_dict((saved or {}).get("rejection") or {}) if isinstance(saved, dict) else RejectConfig()
    return with_overrides(own, overrides or {}).validate()


def summary_lines(record: dict | None) -> tuple[list[str], str | None]:
    """What the commands print after calibrating: the lines, and the warning (for stderr) if any."""
    if record is None:
        return ["calibration: skipped (the run has no validation images); exports stay uncalibrated"], None
    lines = [
        f"calibration: temperature {record['temperature']:.3f} on {record['num_images']} validation images, "
        f"ECE {record['ece_before']:.4f} before, {record['ece_after']:.4f} after"
    ]
    rejection = record["rejection"]
    if rejection["value"] is not None:
        accuracy = rejection["accuracy_accepted"]
        lines.append(
            f"rejection ({rejection['target']}): {rejection['score']} >= {rejection['value']:.4g} accepts "
            f"{rejection['accepted']:.1%} of validation images, accuracy on them "
            f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}; below it the answer is 'unknown' (index -1)"
        )
    if record.get("unknown"):
        aurocs = ", ".join(f"{k} {v:.4f}" for k, v in record["unknown"]["auroc"].items())
        lines.append(f"unknown images ({record['unknown']['num_images']}): AUROC known vs unknown {aurocs}")
    return lines, rejection.get("warning")


def calibration_beside(model_path: str | Path) -> Calibration | None:
    """The calibration that belongs to a model file: its run's `calibration.json` (a run directory's
    model.keras), else the `calibration` of the model card beside it (an export). None: uncalibrated."""
    import json

    folder = Path(model_path).parent
    if (folder / CALIBRATION_FILE).is_file():
        return read_calibration(folder)
    card = folder / "model_card.json"
    if not card.is_file():
        return None
    try:
        entry = json.loads(card.read_text(encoding="utf-8")).get("calibration")
        if not entry:
            return None
        calibration = Calibration(float(entry["temperature"]), entry["score"], entry["threshold"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{card}: its calibration entry is unreadable ({error}); export the run again") from None
    return calibration.with_gaussians_from(folder)
