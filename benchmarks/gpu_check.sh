#!/usr/bin/env bash
# The one script a lent GPU runs, from the repository root, in at most GPU_CHECK_BUDGET_S seconds
# (default 450; with the 5 s grace of each `timeout`, under 8 minutes): device info, an in-place
# CUDA build for this card's arch only, the CUDA tests, benchmarks/gpu_bench.py, compute-sanitizer
# (memcheck, racecheck, synccheck) on benchmarks/gpu_sanitizer_case.py, the TabularSNN training
# step against snnTorch on the GPU (benchmarks/bench_tabular.py --device cuda) and the study's
# quick preset with --device cuda. Every step runs under `timeout` with a limit that leaves the
# later steps their minimum time, and a failing step does not stop the later ones. Everything
# (one log per step, bench.{json,md}, tabular_cuda.{json,md}, study/, summary.md) goes to $OUT
# (default ./gpu_out). Optional test and peer packages (snntorch, spikingjelly, ART) must be
# importable; the CUDA tests run on 6 pytest-xdist workers when it is installed.
# GPU_CHECK_STEPS (default: all) names the steps to run, e.g. "info build tests bench" for a
# rerun; GPU_BENCH_ARGS passes more arguments to gpu_bench.py (e.g. "--N 1024").
# Exit status: 0 when every step passed, 1 otherwise.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET_S:-450}))
export ROOT OUT PY PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

: >"$OUT/steps.tsv"
# run_step NAME CAP_S RESERVE_S CMD...: runs CMD with a limit of CAP_S seconds, cut so that
# RESERVE_S seconds stay for the steps after it; output to $OUT/NAME.log, its tail to stdout. The
# command sees its limit as STEP_LIMIT.
run_step() {
  local name=$1 cap=$2 reserve=$3
  shift 3
  if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then
    return
  fi
  local left=$((DEADLINE - SECONDS - reserve)) limit start rc status
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    printf '%s\tskipped\t0\tno time left\n' "$name" >>"$OUT/steps.tsv"
    echo "== $name: skipped, no time left"
    return
  fi
  echo "== $name (limit ${limit} s)"
  start=$SECONDS
  STEP_LIMIT=$limit timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  printf '%s\t%s\t%s\trc=%s\n' "$name" "$status" "$((SECONDS - start))" "$rc" >>"$OUT/steps.tsv"
  tail -n 25 "$OUT/$name.log"
  echo "== $name: $status (rc $rc, $((SECONDS - start)) s)"
}

info() {
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
    --format=csv
  "$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "capability", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "memory GiB", round(p.total_memory / 2**30, 1))
for mod in ("snntorch", "spikingjelly", "cupy", "triton", "ninja"):
    try:
        print(mod, getattr(__import__(mod), "__version__", "?"))
    except ImportError:
        print(mod, "not installed")
PY
  nvcc --version | tail -n 2
  sanitizer && "$SANITIZER" --version | head -n 2
  git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null || echo "commit: no git metadata"
  "$PY" -c 'import torch; print(torch.cuda.get_device_name())' >"$OUT/card.txt"
}

build() {
  local arch
  arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')" || return 1
  echo "building for TORCH_CUDA_ARCH_LIST=$arch"
  # setup.py: SNNKERNELS_CUDA=1 fails loudly without a CUDA build; one arch keeps nvcc short.
  TORCH_CUDA_ARCH_LIST="$arch" SNNKERNELS_CUDA=1 MAX_JOBS="$(nproc)" \
    "$PY" setup.py build_ext --inplace || return 1
  "$PY" -c 'import snnkernels; print("build_info", snnkernels.build_info())'
}

tests() {
  local workers=()
  "$PY" -c 'import xdist' 2>/dev/null && workers=(-n 6)
  "$PY" -m pytest -q tests -k cuda --maxfail=20 -rs -p no:cacheprovider "${workers[@]}"
}

# Sets SANITIZER to compute-sanitizer's path, or fails.
sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
    "$(dirname "$(command -v nvcc 2>/dev/null || echo /none/bin/nvcc)")/compute-sanitizer"; do
    [ -n "$c" ] && [ -x "$c" ] && SANITIZER=$c && return 0
  done
  echo "compute-sanitizer not found"
  return 1
}

sanitize() {  # sanitize TOOL
  local tool=$1 filter=()
  sanitizer || return 1
  # Instrument only this project's kernels (all named lif_*_kernel): torch's own are not under
  # test, and it is faster.
  "$SANITIZER" --help 2>&1 | grep -q -- '--kernel-name' && filter=(--kernel-name kns=lif_)
  # Without the caching allocator every tensor is its own allocation, so memcheck sees overruns.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" "${filter[@]}" \
    --error-exitcode 99 --print-limit 50 "$PY" benchmarks/gpu_sanitizer_case.py
}

bench() {
  # gpu_bench.py starts no new case after --budget-s; the last one must end before the limit.
  # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of words
  "$PY" benchmarks/gpu_bench.py --out "$OUT" --budget-s $((STEP_LIMIT > 40 ? STEP_LIMIT - 30 : 10)) \
    ${GPU_BENCH_ARGS:-}
}

tabular() {
  "$PY" benchmarks/bench_tabular.py --device cuda --hidden 128 512 --reps 10 --out "$OUT"
}

study() {
  "$PY" -m snnkernels study --preset quick --device cuda --out "$OUT/study" --no-progress
}

export -f info build tests sanitizer sanitize bench tabular study

{
  echo "gpu_check: $(date -u +%FT%TZ) in $ROOT, output in $OUT, budget $((DEADLINE - SECONDS)) s"
  run_step info 30 400 bash -c info
  run_step build 200 240 bash -c build
  run_step tests 120 180 bash -c tests
  run_step bench 150 130 bash -c bench
  run_step memcheck 50 90 bash -c 'sanitize memcheck'
  run_step tabular 50 65 bash -c tabular
  run_step racecheck 40 40 bash -c 'sanitize racecheck'
  run_step study 50 20 bash -c study
  run_step synccheck 30 0 bash -c 'sanitize synccheck'

  card="$(cat "$OUT/card.txt" 2>/dev/null || echo unknown)"
  {
    echo "# gpu_check on ${card}"
    echo
    echo "| step | status | seconds | note |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name status secs note; do
      extra=""
      case $name in
        memcheck | racecheck | synccheck)
          extra="$(grep -hoE 'ERROR SUMMARY: [0-9]+ errors?|RACECHECK SUMMARY: [0-9]+ hazards?' \
            "$OUT/$name.log" | tr '\n' ' ')" ;;
        build) extra="$(grep -o 'build_info.*' "$OUT/build.log" | head -n 1)" ;;
        tests) extra="$(tail -n 1 "$OUT/tests.log")" ;;
      esac
      echo "| $name | $status | $secs | $note $extra |"
    done <"$OUT/steps.tsv"
    for f in bench.md tabular_cuda.md; do
      [ -f "$OUT/$f" ] && { echo; cat "$OUT/$f"; }
    done
  } >"$OUT/summary.md"
  echo
  cat "$OUT/summary.md"
} 2>&1 | tee "$OUT/gpu_check.log"

! cut -f2 "$OUT/steps.tsv" | grep -qv '^ok$'
