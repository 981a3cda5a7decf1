#!/usr/bin/env bash
# Compile-checks every csrc/cuda/*.cu for sm_80 and sm_90 with the flags a torch CUDA extension
# build uses (setup.py's nvcc flags plus torch.utils.cpp_extension's), without linking and without
# a GPU. Objects go to a temporary directory. Works with a CPU-only torch wheel: its include dir
# has the ATen/cuda and c10/cuda headers, and the one generated header CUDA wheels add
# (c10/cuda/impl/cuda_cmake_macros.h) is supplied here when missing.
# Usage: scripts/check_cuda_compile.sh [ARCH ...]   (default: 80 90). Environment: PYTHON (default
# python3), NVCC (default nvcc), NVCC_EXTRA (more flags, e.g. "-Xptxas -v" for register use).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
NVCC="${NVCC:-nvcc}"
ARCHS=("$@")
[ ${#ARCHS[@]} -eq 0 ] && ARCHS=(80 90)

command -v "$NVCC" >/dev/null || { echo "check_cuda_compile: nvcc not found" >&2; exit 2; }
shopt -s nullglob
SOURCES=("$ROOT"/csrc/cuda/*.cu)
[ ${#SOURCES[@]} -eq 0 ] && { echo "check_cuda_compile: no csrc/cuda/*.cu" >&2; exit 2; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Flags from the installed torch, one per line: include dirs, torch's common nvcc flags, the C++
# standard its extension builder passes to nvcc, and its C++ ABI.
NVCC_PATH="$(command -v "$NVCC")"
if ! NVCC_PATH="$NVCC_PATH" "$PYTHON" - >"$TMP/torch_flags" 2>"$TMP/torch_flags.err" <<'PY'
import inspect
import os
import re

import torch
from torch.utils import cpp_extension as ce

if ce.CUDA_HOME is None:  # a CPU-only torch does not look for a toolkit: use nvcc's
    ce.CUDA_HOME = os.path.dirname(os.path.dirname(os.path.realpath(os.environ["NVCC_PATH"])))
try:
    incs = ce.include_paths(device_type="cuda")
except TypeError:  # torch < 2.6
    incs = ce.include_paths(cuda=True)
flags = [f"-I{p}" for p in incs] + list(ce.COMMON_NVCC_FLAGS)
# BuildExtension appends -std=c++NN (17 in older torch, 20 in newer) when no -std is given; the
# NN is spelled in one line of its source: `cpp_flag = cpp_flag_prefix + 'c++NN'`.
std = re.search(r"cpp_flag_prefix \+ '(c\+\+\d+)'", inspect.getsource(ce))
flags.append(f"-std={std.group(1) if std else 'c++17'}")
flags.append(f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
flags.append(f'-DSNNKERNELS_TORCH_VERSION="{torch.__version__}"')
print("\n".join(flags))
PY
then
  echo "check_cuda_compile: could not read flags from torch ($PYTHON):" >&2
  cat "$TMP/torch_flags.err" >&2
  exit 2
fi
mapfile -t TORCH_FLAGS <"$TMP/torch_flags"

shipped=0
for flag in "${TORCH_FLAGS[@]}"; do
  [[ $flag == -I* && -f ${flag#-I}/c10/cuda/impl/cuda_cmake_macros.h ]] && shipped=1
done
if [ $shipped -eq 0 ]; then
  mkdir -p "$TMP/shim/c10/cuda/impl"
  echo '#define C10_CUDA_BUILD_SHARED_LIBS' >"$TMP/shim/c10/cuda/impl/cuda_cmake_macros.h"
  TORCH_FLAGS+=("-I$TMP/shim")
fi

# setup.py's nvcc flags and defines; -DTORCH_* as BuildExtension adds them.
COMMON=("${TORCH_FLAGS[@]}" --compiler-options -fPIC -O3 --fmad=false -lineinfo
  -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
  -DSNNKERNELS_PYTHON_MODULE -DSNNKERNELS_WITH_CUDA '-DSNNKERNELS_CUDA_ARCHS="8.0;9.0"')

compile_arch() {  # one arch, all sources, sequentially; one status line per file
  local arch=$1 src name log start rc=0
  for src in "${SOURCES[@]}"; do
    name="$(basename "$src" .cu)"
    log="$TMP/$name.sm_$arch.log"
    start=$SECONDS
    # shellcheck disable=SC2086  # NVCC_EXTRA is a word list
    if "$NVCC" "${COMMON[@]}" ${NVCC_EXTRA:-} -gencode "arch=compute_$arch,code=sm_$arch" \
        -c "$src" -o "$TMP/$name.sm_$arch.o" >"$log" 2>&1; then
      echo "ok   ${src#"$ROOT"/} sm_$arch ($((SECONDS - start)) s)"
      sed 's/^/    /' "$log"  # warnings, and ptxas -v output when asked for
    else
      echo "FAIL ${src#"$ROOT"/} sm_$arch ($((SECONDS - start)) s)"
      sed 's/^/    /' "$log"
      rc=1
    fi
  done
  return $rc
}

start=$SECONDS
pids=()
for arch in "${ARCHS[@]}"; do
  compile_arch "$arch" >"$TMP/arch_$arch.out" &
  pids+=($!)
done
failed=0
for i in "${!ARCHS[@]}"; do
  wait "${pids[$i]}" || failed=$((failed + 1))
  cat "$TMP/arch_${ARCHS[$i]}.out"
done
total=$((${#SOURCES[@]} * ${#ARCHS[@]}))
if [ $failed -eq 0 ]; then
  echo "check_cuda_compile: all $total compiles passed" \
    "(${#SOURCES[@]} files x ${#ARCHS[@]} archs) in $((SECONDS - start)) s"
else
  echo "check_cuda_compile: FAILED for $failed of ${#ARCHS[@]} archs in $((SECONDS - start)) s"
  exit 1
fi
