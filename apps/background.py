"""Slow measurements run as background processes whose JSON answer is cached in a file.

Measuring the whole family (building 13 graphs) or timing training steps takes tens of seconds on a
small CPU. Running them out of process keeps the page responsive and keeps Keras' global state in the
server untouched; the cache file makes the answer survive reruns, refreshes and server restarts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from apps.jobs import child_env

# cache file -> the process computing it (module state survives Streamlit reruns)
_RUNNING: dict[str, subprocess.Popen] = {}
# cache file -> why its command failed (kept until `forget`, so a failure is not retried on every rerun)
_FAILED: dict[str, str] = {}


def cached_json(cache: Path, argv: list[str]) -> tuple[Any | None, str | None]:
    """(answer, error) for the command `argv` that prints JSON on stdout.

    Returns the cached answer when there is one; otherwise starts the command (once) and returns
    (None, None) while it runs, or (None, message) when it failed.
    """
    for proc in _RUNNING.values():
        proc.poll()  # reap finished measurements nobody asks about any more (no zombies)
    cache = Path(cache)
    if cache.is_file():
        try:
            return json.loads(cache.read_text()), None
        except ValueError:
            cache.unlink(missing_ok=True)
    key = str(cache)
    if key in _FAILED:
        return None, _FAILED[key]
    proc = _RUNNING.get(key)
    if proc is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out, open(_error_file(cache), "wb") as err:
            # Lowest CPU priority: a measurement must never slow down a training job or the page.
            _RUNNING[key] = subprocess.Popen(
                argv,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                preexec_fn=_lowest_priority,
            )
        return None, None
    code = proc.poll()
    if code is None:
        return None, None
    del _RUNNING[key]
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    if code == 0:
        try:
            json.loads(tmp.read_text())
            os.replace(tmp, cache)
            return cached_json(cache, argv)
        except (OSError, ValueError):
            pass
    tmp.unlink(missing_ok=True)
    lines = _error_file(cache).read_text(errors="replace").strip().splitlines() if _error_file(cache).exists() else []
    message = next((line for line in reversed(lines) if line.strip()), f"exit code {code}")
    _FAILED[key] = message.removeprefix("error: ")
    return None, _FAILED[key]


def _lowest_priority() -> None:
    os.nice(19)


def forget(cache: Path) -> None:
    """Drop a cached answer (or a failure) so that the next call measures again."""
    Path(cache).unlink(missing_ok=True)
    _FAILED.pop(str(cache), None)


def running(cache: Path) -> bool:
    proc = _RUNNING.get(str(cache))
    return proc is not None and proc.poll() is None


def _error_file(cache: Path) -> Path:
    return cache.with_name(f".{cache.name}.stderr")


def stop_all(timeout: float = 10.0) -> None:
    """Terminate every measurement still running (a server shutting down, or a test cleaning up)."""
    for key, proc in list(_RUNNING.items()):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _RUNNING.pop(key, None)
