"""The app as an attacker would meet it (issue 11, A6 and A7).

* A6: uploads and their extractions under `runs/.datasets` are pruned to the newest few within a size cap,
  never the dataset being loaded or one a live run trains on.
* A7: the app serves this machine only. `workbench app` binds loopback from any directory; the page refuses
  to draw when Streamlit listens on other interfaces (`streamlit run` started outside the project root) or
  when the browser's `Host` is not this machine (DNS rebinding), unless WORKBENCH_ALLOW_REMOTE=1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from test_app import new_app, png_bytes, upload, zip_bytes

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


# ---------------------------------------------------------------------------------------------- A6: retention
def _store(root: Path, name: str, size: int, age_s: float, ingest: bool = True) -> list[Path]:
    """An upload folder `root/<name>/upload.zip` (and its ingest folder) last touched `age_s` ago."""
    from apps.data_section import _ingest_key

    upload_file = root / name / "upload.zip"
    upload_file.parent.mkdir(parents=True)
    upload_file.write_bytes(b"z" * size)
    paths = [upload_file.parent]
    if ingest:
        extracted = root / "ingest" / _ingest_key(str(upload_file)) / "data" / "img.png"
        extracted.parent.mkdir(parents=True)
        extracted.write_bytes(b"p" * size)
        paths.append(root / "ingest" / _ingest_key(str(upload_file)))
    stamp = time.time() - age_s
    for path in paths:
        for sub in [path, *path.rglob("*")]:
            os.utime(sub, (stamp, stamp))
    return paths


def test_old_uploads_are_pruned_by_count_and_size_but_never_a_protected_one(tmp_path):
    from apps.data_section import prune_datasets

    root = tmp_path / ".datasets"
    newest = _store(root, "a" * 16, 1000, age_s=10)
    middle = _store(root, "b" * 16, 1000, age_s=20)
    oldest = _store(root, "c" * 16, 1000, age_s=30)
    folder_ingest = root / "ingest" / ("f" * 16)
    folder_ingest.mkdir()
    (folder_ingest / "manifest.json").write_text("{}")
    for path in (folder_ingest / "manifest.json", folder_ingest):  # a local folder's ingest, older than all
        os.utime(path, (time.time() - 40, time.time() - 40))

    in_use = str(oldest[0] / "upload.zip")  # the upload a live run trains on: kept whatever its age
    removed = prune_datasets(root, protect={in_use}, limits=(2, 10**9))
    assert sorted(removed) == sorted([*middle, folder_ingest])
    assert all(p.exists() for p in newest + oldest)

    # the size cap: 4000 bytes is one upload with its ingest (2000) plus the protected one (2000)
    newer = _store(root, "d" * 16, 1000, age_s=5)
    removed = prune_datasets(root, protect={in_use}, limits=(10, 4000))
    assert sorted(removed) == sorted(newest) and all(p.exists() for p in newer + oldest)


def test_the_app_keeps_only_the_newest_uploads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATASETS_KEEP", "2")
    at = new_app()
    at.run()
    for i in range(4):  # four different zips, each loaded in turn
        members = {
            f"set{i}/{c}/{k}.png": png_bytes(colour, seed=i * 10 + k) for c, colour in _COLOURS for k in range(4)
        }
        upload(at, f"set{i}.zip", zip_bytes(members))
        assert not at.error, [e.value for e in at.error]
    datasets = tmp_path / "runs" / ".datasets"
    kept = {f.name for p in datasets.iterdir() if p.name != "ingest" for f in p.iterdir()}
    assert kept == {"set2.zip", "set3.zip"} and len(list((datasets / "ingest").iterdir())) == 2


_COLOURS = (("red", (200, 30, 30)), ("blue", (30, 30, 200)))


def test_a_live_runs_upload_is_not_pruned(tmp_path, monkeypatch):
    from apps import data_section

    monkeypatch.chdir(tmp_path)
    datasets = tmp_path / "runs" / ".datasets"
    trained_on = _store(datasets, "e" * 16, 100, age_s=100)
    run_dir = tmp_path / "runs" / "live-run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"data: {trained_on[0] / 'upload.zip'}\n")
    code = f"""
        import time
        from workbench.engine.rundir import pid_file
        with pid_file({str(run_dir)!r}):
            print("holding", flush=True)
            time.sleep(120)
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        newer = _store(datasets, "f" * 16, 100, age_s=1)
        removed = data_section.prune_datasets(datasets, protect=data_section._live_run_data(), limits=(1, 10**9))
        assert sorted(removed) == sorted(newer) and all(p.exists() for p in trained_on)
    finally:
        holder.kill()
        holder.wait()
    newer = _store(datasets, "g" * 16, 100, age_s=1)
    removed = data_section.prune_datasets(datasets, protect=data_section._live_run_data(), limits=(1, 10**9))
    assert sorted(removed) == sorted(trained_on)  # once the run has ended, its upload is an old one


# ---------------------------------------------------------------------------------------------- A7: who is served
@pytest.mark.parametrize(
    ("address", "host", "allow", "refused"),
    [
        ("localhost", "localhost:8501", False, None),
        ("127.0.0.1", "127.0.0.1:8501", False, None),
        ("::1", "[::1]:8501", False, None),
        (None, "localhost:8501", False, "every network interface"),  # `streamlit run` from elsewhere
        ("0.0.0.0", "localhost:8501", False, "'0.0.0.0'"),
        ("192.168.1.20", "192.168.1.20:8501", False, "'192.168.1.20'"),
        ("localhost", "rebind.example:8501", False, "DNS rebinding"),
        ("0.0.0.0", "lab-server:8501", True, None),  # WORKBENCH_ALLOW_REMOTE=1: the user's choice
        (None, None, False, None),  # no HTTP request at all (AppTest): nothing is exposed
    ],
)
def test_the_page_is_served_to_this_machine_only(address, host, allow, refused):
    from apps.serving import serving_problem

    problem = serving_problem(address, host, allow_remote=allow)
    if refused is None:
        assert problem is None
    else:
        assert refused in problem and "WORKBENCH_ALLOW_REMOTE=1" in problem


def test_workbench_app_binds_loopback_and_an_explicit_address_is_the_opt_in():
    from apps.serving import ALLOW_REMOTE_ENV, remote_allowed
    from workbench.commands.app import config_flags

    assert "--server.address=localhost" in config_flags()
    assert remote_allowed({ALLOW_REMOTE_ENV: "1"}) and not remote_allowed({})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(argv: list[str], cwd: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WORKBENCH_ALLOW_REMOTE", None)
    server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    pytest.fail(f"{argv} did not serve on port {port}")


def _flags(port: int) -> list[str]:
    return [f"--server.port={port}", "--server.headless=true", "--browser.gatherUsageStats=false"]


def _listening_addresses(pid: int, port: int) -> set[str]:
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        c.laddr.ip
        for p in processes
        for c in p.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


@pytest.mark.browser
def test_in_chromium_the_app_refuses_other_interfaces_and_other_host_names(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing; install it with `bash scripts/install.sh`")
    from playwright.sync_api import sync_playwright

    safe_port, open_port = _free_port(), _free_port()
    safe = _serve([sys.executable, "-m", "workbench", "app", "--port", str(safe_port)], tmp_path, safe_port)
    # The report's reproduction: `streamlit run` from another directory, where .streamlit/config.toml is not read.
    exposed = _serve(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "workbench_app.py"), *_flags(open_port)],
        tmp_path,
        open_port,
    )
    try:
        assert _listening_addresses(safe.pid, safe_port) <= {"127.0.0.1", "::1"}
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP rebind.example 127.0.0.1"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"http://localhost:{safe_port}")
            page.get_by_role("heading", name="1 · Data").wait_for()  # served normally on localhost
            page.goto(f"http://rebind.example:{safe_port}")
            page.get_by_text("DNS rebinding").wait_for()
            assert page.get_by_role("heading", name="1 · Data").count() == 0
            page.goto(f"http://localhost:{open_port}")
            page.get_by_text("listening on every network interface").wait_for()
            assert page.get_by_role("heading", name="1 · Data").count() == 0
            browser.close()
    finally:
        for server in (safe, exposed):
            for child in _children(server.pid):
                child.send_signal(signal.SIGTERM)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
