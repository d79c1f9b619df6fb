"""`workbench lr-find [DATA]`: sweep the phase-1 learning rate on cached features; plot and suggest one.

The options are generated from `LRFindConfig` (`workbench.engine.lr_finder`), like `train`'s from `RunConfig`.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from workbench.config_fields import add_arguments as add_config_arguments
    from workbench.engine.lr_finder import LRFindConfig

    add_config_arguments(parser, LRFindConfig, positional=("data",))


def run(args: argparse.Namespace) -> int:
    from workbench.config_fields import overrides_from_args, with_overrides
    from workbench.engine.lr_finder import LRFindConfig, lr_find

    config = with_overrides(LRFindConfig(), overrides_from_args(args, LRFindConfig)).validate()
    result = lr_find(config)
    print(
        f"swept {len(result.learning_rates)} learning rates from {result.learning_rates[0]:.2g} to "
        f"{result.learning_rates[-1]:.2g} on {config.variant} features"
    )
    print(f"lowest smoothed loss at {result.min_loss_lr:.2g} (a tenth of it: {result.min_loss_lr / 10:.2g})")
    print(f"suggested learning rate: {result.suggestion:.2g} (steepest descent of the loss)")
    print(f"use it: workbench train {config.data or ''} --learning-rate {result.suggestion:.2g}".replace("  ", " "))
    print(f"plot: {result.plot}  (data: {result.table})")
    if result.note:
        print(f"warning: {result.note}", file=sys.stderr)
    return 0
