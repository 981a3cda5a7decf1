#!/usr/bin/env bash
# The main job (until the study exists): set up, then benchmark the fused LIF op against the
# reference and snnTorch on this machine and write benchmarks/results/lif_cpu.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV=${SNNKERNELS_VENV:-.venv}
"$VENV/bin/python" benchmarks/run_benchmarks.py "$@"
