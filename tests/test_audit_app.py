"""The Data section's data-health panel, driven headlessly with AppTest on a small folder of pictures.

The folder holds a re-encoded copy of one picture (a real near-duplicate for the pixel check). The audit's
features are cached beforehand (random vectors), so the panel shows real findings without running a backbone.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "apps" / "workbench_app.py")


def _pictures(root: Path) -> Path:
    """Three classes of six smooth random pictures, and a JPEG re-encoding of the first cat among the cats."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for k in range(6):
            small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(small).resize((64, 64), Image.BICUBIC).save(root / c / f"{k}.png")
    buf = io.BytesIO()
    Image.open(root / "cat" / "0.png").convert("RGB").save(buf, "JPEG", quality=70)
    (root / "cat" / "0-copy.jpg").write_bytes(buf.getvalue())
    return root


@pytest.fixture
def audited_folder(tmp_path, monkeypatch):
    """An app workspace in which a folder was audited: `runs/.datasets/audit/<key>/findings.json`."""
    from pipelines import ingest
    from workbench.audit import run_audit
    from workbench.audit.features import FEATURES_FILE, audit_records, cache_key
    from workbench.engine.features import save_cache

    monkeypatch.chdir(tmp_path)
    data = _pictures(tmp_path / "photos")
    out = tmp_path / "runs" / ".datasets" / "audit" / hashlib.sha256(str(data).encode()).hexdigest()[:16]
    manifest = ingest(str(data), out)
    x = np.random.default_rng(0).normal(size=(len(audit_records(manifest)), 32)).astype(np.float32)
    save_cache(out / FEATURES_FILE, cache_key(manifest, "lite0", "imagenet", 224), {"x": x})
    run_audit(str(data), out)
    yield data, out
    from apps import background

    background.stop_all()


def test_findings_show_with_thumbnails_and_chosen_actions_make_a_dataset_version(audited_folder):
    from streamlit.testing.v1 import AppTest

    data, audited = audited_folder
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.radio(key="data_source").set_value("Local folder or zip").run()
    at.text_input(key="data_folder").input(str(data))
    next(b for b in at.button if b.label == "Load folder").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Duplicate groups"] == "1"
    choice = at.selectbox(key="audit_duplicate-0001-1")
    assert choice.options == ["keep", "drop"] and choice.value == "keep"
    choice.set_value("drop").run()
    at.button(key="audit_apply").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Dataset version" in s.value and "1 dropped" in s.value for s in at.success)
    versions = list((audited / "versions").iterdir())
    assert len(versions) == 1 and (versions[0] / "dataset.json").is_file()
