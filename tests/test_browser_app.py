"""The app in a real browser: Debian's Chromium driven by Playwright (no browser download).

Starts `workbench app` on a free localhost port in a temporary folder, refuses a broken upload,
uploads a small generated zip, trains one short epoch of a tiny custom variant, waits for the
confusion matrix, downloads the SavedModel zip and loads it with `tf.saved_model.load`.
Screenshots of every step land in `test-artifacts/browser/` (gitignored) for a person to look at.

Needs /usr/bin/chromium (`bash scripts/install.sh` installs it); skipped without it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CLASSES = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
IMAGES_PER_CLASS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset_zip(path: Path) -> Path:
    """Three colour classes of small noisy PNGs: learnable in one epoch, tiny to upload."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for name, colour in CLASSES.items():
            for i in range(IMAGES_PER_CLASS):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "PNG")
                archive.writestr(f"colours/{name}/{i:02d}.png", buffer.getvalue())
    return path


@pytest.fixture
def app_url(tmp_path):
    """`workbench app` serving from an empty folder; stopped (with any training job) afterwards."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen(
        [sys.executable, "-m", "workbench", "app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            output = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
            server.kill()
            pytest.fail(f"the app did not start on {url}: {output[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    for pid_file in (tmp_path / "runs").glob("*/pid"):  # a job that outlived a failed test
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


@pytest.fixture
def page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing; install it with `bash scripts/install.sh` (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        yield tab
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def section(page, name: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name.split(". ", 1)[1]).first.wait_for()


def test_upload_train_evaluate_and_download_a_savedmodel_in_chromium(app_url, page, tmp_path):
    # Long on purpose: one real browser session walks the whole user journey; splitting restarts Chromium and the app.
    page.goto(app_url)

    # 1. Data: a broken upload is a message on the page; the real zip gives the ingest report.
    page.get_by_text("Upload a zip", exact=True).click()
    uploader = page.locator("input[type=file]")
    broken = tmp_path / "broken.zip"
    broken.write_text("this is not a zip archive")
    uploader.set_input_files(str(broken))
    error = page.get_by_test_id("stAlertContentError")
    error.wait_for()
    assert "broken.zip is not a readable zip archive" in error.inner_text()
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "1-data-error")

    uploader.set_input_files(str(dataset_zip(tmp_path / "colours.zip")))
    page.get_by_text("36 usable images in 3 classes").wait_for()
    page.get_by_test_id("stVegaLiteChart").locator("canvas, svg").first.wait_for()
    page.get_by_test_id("stImage").nth(3 * 6 - 1).wait_for()  # the sample grid: six per class
    assert page.get_by_test_id("stAlertContentError").count() == 0
    shot(page, "2-data-report")

    # 2. Model: a tiny custom variant (φ = -4) at 48 px, so one epoch takes seconds on 2 cores.
    section(page, "2. Model")
    page.get_by_test_id("stSelectbox").filter(has_text="Variant").click()
    page.get_by_role("option", name="custom φ").click()
    slider = page.get_by_role("slider")
    slider.wait_for()
    slider.focus()
    for _ in range(8):  # -2.0 → -4.0 in steps of 0.25
        slider.press("ArrowLeft")
    # Each φ has its own size box, prefilled with its resolution: wait for the one of φ = -4 (128 px) alone.
    page.wait_for_function(
        """() => { const boxes = document.querySelectorAll('input[aria-label="Image size (pixels)"]');
                   return boxes.length === 1 && boxes[0].value === '128'; }"""
    )
    assert page.get_by_text("trains from scratch").count() >= 1
    size = page.get_by_role("spinbutton", name="Image size (pixels)")
    size.fill("48")
    size.press("Enter")
    page.get_by_text("phi=-4").first.wait_for()
    shot(page, "3-model")

    # 3. Train: one epoch of the head, none of fine-tuning.
    section(page, "3. Train")
    page.get_by_label("Epochs", exact=True).fill("1")
    page.get_by_label("Fine tune epochs", exact=True).fill("0")
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_label("Learning rate", exact=True).fill("0.01")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("is in progress").wait_for()
    page.get_by_text("phase 1:").first.wait_for(timeout=120_000)
    shot(page, "4-train-running")
    page.get_by_text("Finished: best validation accuracy").wait_for(timeout=240_000)
    shot(page, "5-train-finished")
    config = next((tmp_path / "runs").glob("*/config.yaml")).read_text()
    for line in ("variant: phi=-4", "image_size: 48", "epochs: 1", "fine_tune_epochs: 0", "batch_size: 8"):
        assert line in config.splitlines()

    # 4. Evaluate: the confusion matrix is drawn.
    section(page, "4. Evaluate")
    page.get_by_text("Confusion matrix").wait_for(timeout=180_000)
    matrix = page.get_by_test_id("stVegaLiteChart").first
    matrix.locator("canvas, svg").first.wait_for()
    assert matrix.bounding_box()["height"] > 100
    page.get_by_text("Grad-CAM for").wait_for()
    shot(page, "6-evaluate")

    # A click on a cell of the matrix opens the images behind it (each with keep / drop / relabel). The plot's
    # place inside the chart depends on the axis labels' widths, so walk along the first row until a click lands.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = matrix.bounding_box()
    clicked = page.get_by_text("Clicked: true")
    for x in range(8, int(box["width"]), 16):
        matrix.click(position={"x": x, "y": 30})
        with contextlib.suppress(PlaywrightTimeout):
            clicked.wait_for(timeout=2_000)
            break
    assert clicked.count() == 1, "no click on the confusion matrix selected a cell"
    assert "Clicked: true blue," in clicked.inner_text()  # the first row is the first class
    page.get_by_text(re.compile(r"image\(s\), most confident first|No blue image was predicted as")).wait_for()
    shot(page, "6b-evaluate-cell")

    # 5. Export: a SavedModel lands in saved_models/ and downloads as a zip that TensorFlow loads.
    section(page, "5. Export")
    page.get_by_role("button", name="Export", exact=True).click()
    download_button = page.get_by_role("button", name="Download the savedmodel export")
    download_button.wait_for(timeout=300_000)
    page.get_by_text("Model card:").wait_for()
    shot(page, "7-export")
    with page.expect_download() as info:
        download_button.click()
    archive = tmp_path / "download.zip"
    info.value.save_as(archive)
    exported = list((tmp_path / "saved_models").glob("*/1/saved_model.pb"))
    assert len(exported) == 1

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(unpacked)
    (model_dir,) = [p.parent for p in unpacked.rglob("saved_model.pb")]
    assert (model_dir / "labels.txt").read_text().split() == sorted(CLASSES)

    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    assert "serving_default" in loaded.signatures
    probabilities = loaded.signatures["serving_rgb"](images=tf.fill([1, 48, 48, 3], 128.0))["probabilities"]
    assert probabilities.shape == (1, 3)
    assert abs(float(tf.reduce_sum(probabilities)) - 1.0) < 1e-3

    # 6. Data health: back on the Data page, the panel runs the backbone over the upload once and shows what it
    # found, each image with keep / drop.
    section(page, "1. Data")
    page.get_by_role("button", name="Audit this dataset").click()
    page.get_by_text("Duplicate groups").wait_for(timeout=240_000)
    page.get_by_role("button", name="Make a dataset version from these choices").wait_for()  # drawn after the counts
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "8-data-health")


def test_a_multi_label_labels_file_loads_with_its_label_counts_in_chromium(app_url, page, tmp_path):
    from helpers_multilabel import LABELS, make_multilabel_data

    labels_file = make_multilabel_data(tmp_path / "tagged", n=40)
    page.goto(app_url)
    page.get_by_test_id("stRadio").get_by_text("Local folder or zip", exact=True).click()
    page.get_by_label("Path on this machine", exact=True).fill(str(labels_file))
    page.get_by_role("button", name="Load folder").click()
    loaded = page.get_by_text(f"usable images in {len(LABELS)} labels (multi-label")
    loaded.wait_for()
    assert "40 usable images" in loaded.inner_text()
    page.get_by_text("iterative stratification").wait_for()
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    shot(page, "9-multi-label-data")
