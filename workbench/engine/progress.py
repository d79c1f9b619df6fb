"""A terminal progress bar drawn from run events (the CLI listens to the events as they are written).

On a terminal the current batch line is redrawn in place; elsewhere (CI logs, pipes) only
phase and epoch lines are printed, so logs stay short.
"""

from __future__ import annotations

import sys
from typing import TextIO

from workbench.timefmt import format_duration


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class ProgressPrinter:
    """An events listener: `ProgressPrinter()(event)`."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.width = width
        self.live = self.stream.isatty() if live is None else live
        self._open_line = False
        self._epochs: dict[int, int] = {}

    def _print(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\r\033[K")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "plan":
            budget = format_duration(event.get("budget_s"), "words")
            if event.get("stage") == "fine-tune":
                left = format_duration(event.get("seconds_left"), "words")
                self._print(f"automatic recipe, phase 2 planned again with {left} of training time left:")
            elif event.get("budget_s") is None:
                self._print("recipe:")
            else:
                self._print(f"automatic recipe (budget {budget}; --recipe fixed or explicit options override it):")
            for line in event.get("decisions") or []:
                self._print(f"  {line}")
        elif kind == "budget":
            self._print(f"  time budget: {event['message']}")
        elif kind == "phase":
            self._epochs[event["phase"]] = event["epochs"]
            extra = ""
            if event["phase"] == 1:
                extra = (
                    f" | {event.get('strategy')} x{event.get('replicas')} replicas, batch "
                    f"{event.get('batch_size')}/replica = {event.get('global_batch_size')} global, "
                    f"{event.get('precision')}, {event.get('image_size')} px, "
                    f"{event.get('num_train')} train / {event.get('num_val')} val images"
                )
            resumed = f" (resumed at epoch {event.get('start_epoch')})" if event.get("resumed") else ""
            self._print(f"phase {event['phase']}: {event['name']}, {event['epochs']} epochs{resumed}{extra}")
        elif kind == "stage":
            self._print(
                f"  progressive stage {event['stage']}/{event['stages']}: epochs {event['first_epoch']}-"
                f"{event['last_epoch']} at {event['image_size']} px, RandAugment {_fmt(event.get('rand_augment_factor'), 2)}, "
                f"MixUp alpha {_fmt(event.get('mixup_alpha'), 2)}, dropout {_fmt(event.get('dropout'), 2)}"
            )
        elif kind == "batch" and self.live:
            steps = max(int(event.get("steps") or 1), 1)
            filled = int(self.width * min(event["step"], steps) / steps)
            bar = "#" * filled + "." * (self.width - filled)
            if event.get("stage") in ("features", "trunk"):
                label = "caching features" if event["stage"] == "features" else "caching frozen blocks' output"
                metrics = ""
            else:
                label = f"epoch {event['epoch']}/{self._epochs.get(event['phase'], '?')}"
                metrics = f" loss {_fmt(event.get('loss'))} acc {_fmt(event.get('accuracy'))}"
            text = (
                f"  {label} [{bar}] {event['step']}/{steps}{metrics} "
                f"{event.get('images_per_s') or 0:.0f} img/s ETA {format_duration(event.get('eta_s'))}"
            )
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._open_line = True
        elif kind == "epoch":
            self._print(
                f"  epoch {event['epoch']}/{self._epochs.get(event['phase'], '?')}: loss {_fmt(event.get('loss'))} "
                f"acc {_fmt(event.get('accuracy'))} val_loss {_fmt(event.get('val_loss'))} "
                f"val_acc {_fmt(event.get('val_accuracy'))} ({event.get('images_per_s') or 0:.0f} img/s)"
            )
        elif kind == "error" and self._open_line:
            self._print("")  # end the progress line: the CLI prints the failure itself, once
        elif kind == "done" and self._open_line:
            self._print("")
