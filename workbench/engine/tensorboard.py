"""TensorBoard event files of a run (`runs/<id>/tb/`), written from the run's own events.

`TensorBoardListener` is an `events.Listener`: it hears exactly what `events.jsonl` gets and turns it
into scalars, so the two can never disagree (one source of truth, issue 12). The engine adds one for
the chief of every `fine_tune` run; `log_image` adds the evaluation's confusion matrix at the end.

Scalars, at step = the epoch counted over the whole run (phase 2's first epoch follows phase 1's last):

* `loss/train`, `loss/val`, `accuracy/train`, `accuracy/val`, `learning_rate` (from `epoch` events);
* `images_per_s/phase<n>` per epoch, and `images_per_s/features` for the phase-1 feature pass (step 0).

Written with `tf.summary.write` and the scalar/image plugins' metadata rather than `tf.summary.scalar`:
those wrappers live in the `tensorboard` package, which TensorFlow does not install; the records are
the same ones they write, so TensorBoard reads them as scalars and images. TensorFlow is imported on
first use, never at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

TB_DIR = "tb"

# epoch-event field -> scalar tag
EPOCH_SCALARS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "learning_rate": "learning_rate",
}


def _metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin  # "scalars" / "images": the TensorBoard plugin that shows it
    return metadata


class TensorBoardListener:
    """Writes a run's `phase`, `batch`, `epoch` and `done` events as TensorBoard scalars under `run_dir/tb`.

    `phase_epochs` maps each phase number to its planned epochs (the recipe's phases), so the global
    step of an epoch is known even when a resumed run never re-announces its finished phases; without
    it, the offsets are learnt from the `phase` events heard.
    """

    def __init__(self, run_dir: str | Path, phase_epochs: Mapping[int, int] | None = None):
        self.directory = Path(run_dir) / TB_DIR
        self.phase_epochs = dict(phase_epochs or {})
        self._writer = None

    def step(self, phase: int, epoch: int) -> int:
        """The run-wide epoch number of `epoch` of `phase`."""
        return sum(n for p, n in self.phase_epochs.items() if p < phase) + epoch

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "phase":
            self.phase_epochs.setdefault(event["phase"], event["epochs"])
        elif kind == "epoch":
            step = self.step(event["phase"], event["epoch"])
            values = {tag: event.get(field) for field, tag in EPOCH_SCALARS.items()}
            values[f"images_per_s/phase{event['phase']}"] = event.get("images_per_s")
            self._scalars(values, step)
        elif kind == "batch" and event.get("stage") == "features" and event.get("step") == event.get("steps"):
            self._scalars({"images_per_s/features": event.get("images_per_s")}, 0)
        elif kind in ("done", "error"):
            self.close()

    def _scalars(self, values: dict[str, Any], step: int) -> None:
        import tensorflow as tf

        writer = self._open()
        with writer.as_default():
            for tag, value in values.items():
                if isinstance(value, (int, float)):  # null (NaN, or a field this event lacks) is skipped
                    tf.summary.write(
                        tag, tf.constant(float(value), tf.float32), step=step, metadata=_metadata("scalars")
                    )
        writer.flush()  # a live run is readable at once, and a killed one keeps what it wrote

    def _open(self):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.directory))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def log_image(run_dir: str | Path, tag: str, png: str | Path | bytes, step: int) -> Path:
    """Add a PNG (a path or its bytes) as TensorBoard image `tag` at `step` to `run_dir/tb`; returns the folder."""
    import tensorflow as tf

    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    height, width = tf.io.decode_png(data, channels=3).shape[:2]
    # The image plugin's record: [width, height, encoded image...] as strings (what tf.summary.image writes).
    tensor = tf.constant([str(width).encode(), str(height).encode(), data])
    directory = Path(run_dir) / TB_DIR
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        tf.summary.write(tag, tensor, step=step, metadata=_metadata("images"))
    writer.close()
    return directory


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under `run_dir/tb`: tag -> [(step, value), ...] in write order (for tests and tools)."""
    return {tag: [(s, v) for s, v, _ in rows] for tag, rows in _read(run_dir, "scalars").items()}


def read_images(run_dir: str | Path) -> dict[str, list[tuple[int, bytes]]]:
    """Every image under `run_dir/tb`: tag -> [(step, encoded PNG), ...]."""
    return {tag: [(s, v) for s, _, v in rows] for tag, rows in _read(run_dir, "images").items()}


def _read(run_dir: str | Path, plugin: str) -> dict[str, list[tuple[int, float | None, bytes | None]]]:
    import tensorflow as tf

    out: dict[str, list] = {}
    plugins: dict[str, str] = {}  # a writer may send a tag's metadata with its first value only
    for path in sorted((Path(run_dir) / TB_DIR).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name:
                    plugins[value.tag] = value.metadata.plugin_data.plugin_name
                if plugins.get(value.tag) != plugin:
                    continue
                array = tf.make_ndarray(value.tensor)
                row = (event.step, float(array), None) if plugin == "scalars" else (event.step, None, array[2])
                out.setdefault(value.tag, []).append(row)
    return out
