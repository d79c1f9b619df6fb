"""`workbench search`: hyper-parameter and augmentation-policy search of the fine-tuning recipe, through Optuna.

`run_search(HParamSearchConfig(...))` runs (or continues) a study whose trials are short `fine_tune` runs on a
stratified subset of the data; the winner is saved as a recipe file that `workbench train --recipe FILE` uses.
"""

from workbench.hparam_search.config import HParamSearchConfig
from workbench.hparam_search.recipe_file import apply_recipe_file, load_recipe, save_recipe
from workbench.hparam_search.search import HParamSearchResult, run_search

__all__ = ["HParamSearchConfig", "HParamSearchResult", "apply_recipe_file", "load_recipe", "run_search", "save_recipe"]
