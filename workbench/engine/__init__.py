"""The fine-tuning engine: typed run config, two-phase recipe, precision, strategies, runs.

```python
from workbench.engine import RunConfig, fine_tune
result = fine_tune(RunConfig(data=None, variant="lite0", weights="imagenet"))  # data=None: embedded sample
result.run_dir, result.best_val_accuracy
```

`RunConfig` and the events reader import no TensorFlow; `fine_tune`, `resume` and `RunResult`
load the recipe (and TensorFlow) on first use.
"""

from workbench.engine.config import RecipeConfig, RunConfig

__all__ = ["RecipeConfig", "RunConfig", "RunResult", "TrainingError", "fine_tune", "resume"]

_LAZY = {"fine_tune", "resume", "RunResult", "TrainingError"}


def __getattr__(name: str):
    if name in _LAZY:
        from workbench.engine import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'workbench.engine' has no attribute {name!r}")
