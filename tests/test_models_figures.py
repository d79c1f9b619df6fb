"""The family table is data: `workbench variants` prints it without building a graph or importing
TensorFlow, and the stored figures are still what the built graphs measure.

The cheap variants are checked in the default suite; every named variant with `pytest -m slow`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.models import get_variant, published_names
from workbench.models.figures import VariantRow, list_variants, measure

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ["b0", "lite0", "b0v2"]

VARIANTS_IN_A_FRESH_PROCESS = """
import json, sys
from workbench.cli import main
code = main(["variants", "--json"])
frameworks = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch"))
print(json.dumps({"code": code, "frameworks": frameworks}), file=sys.stderr)
"""


def _stored(variant: str) -> VariantRow:
    (row,) = list_variants([variant])
    return row


@pytest.mark.parametrize("variant", CHEAP)
def test_stored_figures_are_those_of_the_built_graph(variant):
    assert measure(variant) == _stored(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [name for name in published_names() if name not in CHEAP])
def test_stored_figures_of_every_named_variant_are_those_of_the_built_graph(variant):
    assert measure(variant) == _stored(variant)


def test_a_custom_phi_has_no_stored_figures_and_is_measured():
    assert get_variant("phi=0").params is None
    (row,) = list_variants(["phi=0"])  # φ = 0 of the paper's family is B0's graph
    b0 = _stored("b0")
    assert (row.name, row.params, row.macs) == ("phi=0", b0.params, b0.macs)


def test_workbench_variants_prints_every_named_variant_without_tensorflow():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", VARIANTS_IN_A_FRESH_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "frameworks": []}, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == published_names()
    assert [r["params"] for r in rows] == [row.params for row in list_variants()]
