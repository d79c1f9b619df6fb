"""Data health: duplicates and split leakage, likely label errors, outliers and statistics of a dataset.

```python
from workbench.audit import run_audit, apply_findings

findings = run_audit("photos/", out="audit/")        # writes audit/findings.json, audit/summary.txt
version = apply_findings("audit/findings.json", out="photos-v2/")   # a new dataset version (links), never moves a file
```

Modules are named for what they find: `features` (the backbone's pooled features, computed once and cached),
`duplicates` (perceptual hash + feature cosine, grouped with union-find), `label_errors` (cross-validated linear
heads scored with confident learning), `outliers` (k-nearest-neighbour distance), `stats` (sizes, colour, balance),
`findings` (the versioned findings.json format), `run` (the audit itself) and `apply` (dataset versions).
Nothing heavy is imported here: TensorFlow loads only when features must be computed.
"""

from __future__ import annotations

__all__ = ["apply_findings", "run_audit"]


def __getattr__(name: str):
    if name == "run_audit":
        from workbench.audit.run import run_audit

        return run_audit
    if name == "apply_findings":
        from workbench.audit.apply import apply_findings

        return apply_findings
    raise AttributeError(f"module 'workbench.audit' has no attribute {name!r}")
