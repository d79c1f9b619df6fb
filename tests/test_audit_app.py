"""The Data section's data-health panel, driven headlessly with AppTest on the embedded sample.

The audit's features are cached beforehand (random vectors, two of them equal: a duplicate pair), so the
panel shows real findings without running a backbone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "apps" / "workbench_app.py")


@pytest.fixture
def audited_sample(tmp_path, monkeypatch):
    """An app workspace in which the embedded sample was audited: `runs/.datasets/audit/<key>/findings.json`."""
    from pipelines import ingest
    from workbench.audit import run_audit
    from workbench.audit.features import FEATURES_FILE, audit_records, cache_key
    from workbench.engine.features import save_cache

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / ".datasets" / "audit" / hashlib.sha256(b"None").hexdigest()[:16]
    manifest = ingest(None, out)
    records = audit_records(manifest)
    x = np.random.default_rng(0).normal(size=(len(records), 32)).astype(np.float32)
    x[1] = x[0]
    save_cache(out / FEATURES_FILE, cache_key(manifest, "lite0", "imagenet", 224), {"x": x})
    run_audit(None, out)
    yield out
    from apps import background

    background.stop_all()


def test_findings_show_with_thumbnails_and_chosen_actions_make_a_dataset_version(audited_sample):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.button(key="data_use_sample").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Duplicate groups"] == "1"
    choice = at.selectbox(key="audit_duplicate-0001-1")
    assert choice.options == ["keep", "drop"] and choice.value == "keep"
    choice.set_value("drop").run()
    at.button(key="audit_apply").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Dataset version" in s.value and "1 dropped" in s.value for s in at.success)
    versions = list((audited_sample / "versions").iterdir())
    assert len(versions) == 1 and (versions[0] / "dataset.json").is_file()
