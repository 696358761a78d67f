#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a .venv with fastseg and every extra, the reference-model
# dependencies, and (when root on Debian) the system Chromium for the browser test and strace for
# the no-phone-home test.
# Usage: bash scripts/setup.sh                       (idempotent; re-run after pulling)
#        PYTHON=python3.11 bash scripts/setup.sh     (fastseg needs Python >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
  echo "fastseg needs Python >= 3.11; '$PY' is not found. Name one: PYTHON=python3.11 bash scripts/setup.sh" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "fastseg needs Python >= 3.11; '$PY' is $("$PY" -V 2>&1). Name one: PYTHON=python3.11 bash scripts/setup.sh" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if .venv/bin/python -m pip show -q paddleseg >/dev/null 2>&1; then
  # A re-run: pip's check of the whole environment flags paddleseg's unmet pins.
  echo "note: pip may print 'ERROR: ... paddleseg 2.8.0 requires opencv-python<=4.6 ...': expected," \
       "PaddleSeg is installed without its pins on purpose (see scripts/setup.sh); fastseg does not use them."
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[convert,serve,bench,eval,openvino,quantize,ray,dev]"
# PaddleSeg 2.8.0 (model code for the reference builds in converters/) pins opencv-python<=4.6,
# which breaks with numpy 2: install what it really imports, then PaddleSeg itself without its
# pins, last (pip checks pins after an install that resolves dependencies, not after --no-deps,
# so a fresh set-up prints no conflict ERROR).
.venv/bin/python -m pip install -q -r converters/requirements.txt
.venv/bin/python -m pip install -q --no-deps paddleseg==2.8.0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${FASTSEG_NO_APT:-}" ]; then
  # chromium: the browser test; strace and ip (iproute2): the no-phone-home test (tests/test_no_phone_home.py).
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v strace >/dev/null || ! command -v ip >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver strace iproute2 >/dev/null
  fi
fi
echo "fastseg set up: $(.venv/bin/fastseg --version)"
