#!/usr/bin/env bash
# Create .venv in the repository and install dermvqa with every extra (idempotent).
# `--test` also installs the Debian Chromium + driver used by the browser test (both, if either is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--test" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "install.sh: could not install chromium; the browser test will fail" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>/dev/null \
  || .venv/bin/python -m pip install -q torch torchvision
.venv/bin/python -m pip install -q -e ".[all]"
