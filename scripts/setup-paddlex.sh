#!/usr/bin/env bash
# A separate venv with PaddleX 3.7.2 for 'fastseg bench --against paddlex' (PaddleX pins packages
# that conflict with fastseg's own venv, so it never goes there). Offline use needs only the model
# dir: PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK=True is set by the bench worker.
# PaddleX's predictor imports opencv-contrib-python and pypdfium2 at start-up although
# segmentation never uses them (DependencyError "PDFReaderBackend is not ready" without them).
# Usage: bash scripts/setup-paddlex.sh [VENV_DIR]   then   fastseg bench --paddlex-python VENV_DIR/bin/python
set -euo pipefail
VENV=${1:-.venv-paddlex}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q paddlepaddle==3.2.2 paddlex==3.7.2 opencv-contrib-python pypdfium2
echo "PaddleX venv ready: $VENV/bin/python ($("$VENV/bin/python" -c 'import paddlex; print(paddlex.__version__)'))"
