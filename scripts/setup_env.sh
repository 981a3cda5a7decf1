#!/usr/bin/env bash
# Creates the project's virtual environment (.venv, or $SNNKERNELS_VENV) and builds snnkernels
# in it. Installs the CPU build of torch explicitly: an unpinned `torch` would pull a
# multi-GB CUDA build. Safe to rerun: it only installs what is missing and rebuilds in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SNNKERNELS_VENV:-.venv}
TORCH_SPEC=${SNNKERNELS_TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC"
  "$PY" -m pip install -q "$TORCH_SPEC"
fi
echo "[setup] installing test and benchmark requirements"
"$PY" -m pip install -q -r requirements-dev.txt
echo "[setup] building snnkernels (CPU kernels; CUDA too when a CUDA torch and toolkit exist)"
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c "import snnkernels; print('[setup] built:', snnkernels.build_info())"
