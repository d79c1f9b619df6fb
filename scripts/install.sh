#!/usr/bin/env bash
# One command sets up everything on a fresh Debian machine with Python 3.11:
#   bash scripts/install.sh
# It creates .venv (seeing system site-packages, so an already-installed TensorFlow is reused),
# installs the project with its dev extra, and installs Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian ships venv/ensurepip separately from python3.
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

# Chromium from Debian for the browser tests (Playwright drives it via executable_path; no browser download).
# Skipped when already present, so re-running the script stays fast.
if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
fi
