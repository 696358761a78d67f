#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a .venv with fastseg and every extra, the reference-model
# dependencies, and (when root on Debian) the system Chromium for the browser test.
# Usage: bash scripts/setup.sh        (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[convert,serve,bench,ray,dev]"
# PaddleSeg 2.8.0 (model code for the reference builds in converters/) pins opencv-python<=4.6,
# which breaks with numpy 2: install it without its pins, plus what it really imports.
.venv/bin/python -m pip install -q --no-deps paddleseg==2.8.0
.venv/bin/python -m pip install -q -r converters/requirements.txt
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${FASTSEG_NO_APT:-}" ]; then
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
echo "fastseg set up: $(.venv/bin/fastseg --version)"
