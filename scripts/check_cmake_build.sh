#!/usr/bin/env bash
# Builds the op library with CMake the way a libtorch/C++ user would, and runs its C++ test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD=${SNNKERNELS_CMAKE_BUILD:-build-cmake}
PREFIX=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
cmake -S . -B "$BUILD" -DCMAKE_PREFIX_PATH="$PREFIX" -DPython3_EXECUTABLE="$PY" >"$BUILD.log" 2>&1 \
  || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j2 >>"$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
ctest --test-dir "$BUILD" --output-on-failure
