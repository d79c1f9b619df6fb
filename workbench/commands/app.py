"""`workbench app`: start the Streamlit workbench on localhost."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP_FILE = PROJECT_ROOT / "apps" / "workbench_app.py"
CONFIG_FILE = PROJECT_ROOT / ".streamlit" / "config.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="port to serve on (default: 8501 from .streamlit/config.toml)"
    )
    parser.add_argument(
        "--address", default=None, help="address to bind (default: localhost; use 0.0.0.0 to expose it on purpose)"
    )


def config_flags(config_file: Path = CONFIG_FILE) -> list[str]:
    """`.streamlit/config.toml` as `--section.key=value` flags.

    Streamlit reads that file only from the directory it is started in; passing its values as flags
    makes `workbench app` behave the same from any directory, with the file as the one source.
    """
    import tomllib

    if not config_file.is_file():
        return []
    flags = []
    for section, options in tomllib.loads(config_file.read_text()).items():
        for key, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{key}={text}")
    return flags


def run(args: argparse.Namespace) -> int:
    if not APP_FILE.is_file():
        print(f"error: the app file {APP_FILE} is missing; reinstall the project from a full checkout", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), *config_flags()]
    if args.port is not None:
        argv.append(f"--server.port={args.port}")
    env = dict(os.environ)
    if args.address is not None:
        from apps.serving import ALLOW_REMOTE_ENV, is_loopback

        argv.append(f"--server.address={args.address}")
        if not is_loopback(args.address):
            # An address typed here is the user's opt-in; the app refuses others (apps.serving).
            env[ALLOW_REMOTE_ENV] = "1"
    print(f"workbench app: serving {APP_FILE.name}; press Ctrl-C to stop", file=sys.stderr)
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130
