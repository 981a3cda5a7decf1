#!/usr/bin/env bash
# Builds the CPU kernels with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy of
# the tree (the in-place build stays untouched) and runs the op tests under them. Any report
# fails the run (halt_on_error). Leak checking is off: CPython and torch keep allocations alive
# at exit by design, which LeakSanitizer reports as leaks that are not ours.
#   PYTHON=.venv/bin/python bash scripts/sanitize_cpu.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
WORK=${SANITIZE_DIR:-$(mktemp -d /tmp/snnkernels-sanitize.XXXXXX)}
echo "[sanitize] scratch tree: $WORK"
git ls-files -z | xargs -0 cp --parents -t "$WORK"
cd "$WORK"
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
echo "[sanitize] building with $FLAGS"
SNNKERNELS_CUDA=0 CFLAGS="$FLAGS" LDFLAGS="$FLAGS" "$PY" setup.py -q build_ext --inplace >build.log 2>&1 \
  || { tail -n 40 build.log; exit 1; }
PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# allocator_may_return_null: an absurd allocation (the bad-input fuzz asks for terabytes) fails
# as with the normal allocator (torch raises RuntimeError) instead of aborting the run.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
echo "[sanitize] running the op tests under ASan + UBSan"
LD_PRELOAD="$PRELOAD" "$PY" -m pytest -q -p no:cacheprovider tests "$@"
