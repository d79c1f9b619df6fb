"""Scaling search: step 1 of the EfficientNet paper on the user's own data and compute budget.

```python
from workbench.scaling_search import SearchConfig, Budget, run_search
result = run_search(SearchConfig(data="photos/", trials=8, budget=Budget.parse(flops="2.2x")))
result.family          # the chosen ScalingFamily, saved so build_model("<name>:phi=1.5") works
result.search_dir      # results.csv, results.json, pareto.png, events.jsonl, study.db
```

The config and the candidate maths import no TensorFlow; `run_search` loads it on first use.
"""

from workbench.scaling_search.candidates import Candidate
from workbench.scaling_search.config import Budget, ProxyConfig, SearchConfig

__all__ = ["Budget", "Candidate", "ProxyConfig", "SearchConfig", "SearchResult", "run_search"]


def __getattr__(name: str):
    if name in ("run_search", "SearchResult"):
        from workbench.scaling_search import search

        return getattr(search, name)
    raise AttributeError(f"module 'workbench.scaling_search' has no attribute {name!r}")
