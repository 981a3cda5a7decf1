#!/usr/bin/env bash
# The test command: sets up the environment, compile-checks every CUDA file (when nvcc is
# present; this machine has no GPU to run them), builds the C++ library with CMake and runs its
# test, builds the API reference (a broken docstring reference or link fails here), then runs the
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV=${SNNKERNELS_VENV:-.venv}
if command -v nvcc >/dev/null 2>&1; then
  PYTHON="$VENV/bin/python" bash scripts/check_cuda_compile.sh
else
  echo "[test] nvcc not found: skipping the CUDA compile check"
fi
PYTHON="$VENV/bin/python" bash scripts/check_cmake_build.sh
NO_MKDOCS_2_WARNING=1 "$VENV/bin/python" -m mkdocs build --strict -q -d site
"$VENV/bin/python" -m pytest tests "$@"
