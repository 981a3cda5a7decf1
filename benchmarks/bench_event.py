#!/usr/bin/env python
"""Event-driven synapse vs GEMM against the input's spike rate, on this CPU (issue 3 item 7).

For R = T * B = 25 * 256 rows and layer shapes F x N, times (median of --reps, float32) the
forward current x W^T + b as one GEMM (torch.addmm) and as snnkernels' spike_linear over the
nonzeros of x, and the weight gradient grad^T x as a GEMM and as spike_weight_grad, for binary x
at each spike rate. Prints a table, the crossover rate per shape (the largest rate at which the
event path is still faster, for forward + weight gradient together), and writes
event_cpu.{md,json} to --out (default benchmarks/results), or event_cpu_portable.{md,json} when
the kernels' portable path runs (SNNKERNELS_PORTABLE=1, or a CPU without AVX-512). linear_lif
takes the event path at densities <= build_info()['event_max_density']['float32']
(csrc/cpu/policy.h), chosen from these results.

    python benchmarks/bench_event.py [--reps 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import snnkernels

ops = torch.ops.snnkernels
RATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
SHAPES = ((1024, 1024), (512, 512), (128, 128), (128, 16), (128, 2))
ROWS = 25 * 256


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    rows, crossover = [], {}
    for f, n in SHAPES:
        w = torch.randn(n, f, generator=g)
        b = torch.randn(n, generator=g)
        grad = torch.randn(ROWS, n, generator=g)
        for rate in RATES:
            x = (torch.rand(ROWS, f, generator=g) < rate).float()
            r = dict(features=f, neurons=n, rate=rate,
                     gemm_fwd_ms=median_ms(lambda: torch.addmm(b, x, w.t()), args.reps),
                     event_fwd_ms=median_ms(lambda: ops.spike_linear(x, w, b), args.reps),
                     gemm_dw_ms=median_ms(lambda: grad.t() @ x, args.reps),
                     event_dw_ms=median_ms(lambda: ops.spike_weight_grad(grad, x), args.reps))
            r["speedup"] = (r["gemm_fwd_ms"] + r["gemm_dw_ms"]) / (r["event_fwd_ms"] + r["event_dw_ms"])
            rows.append(r)
            print(f"F={f} N={n} rate {rate:.3f}: forward GEMM {r['gemm_fwd_ms']:.2f} / event "
                  f"{r['event_fwd_ms']:.2f} ms, dW GEMM {r['gemm_dw_ms']:.2f} / event "
                  f"{r['event_dw_ms']:.2f} ms, event {r['speedup']:.2f}x", flush=True)
        faster = [r["rate"] for r in rows
                  if (r["features"], r["neurons"]) == (f, n) and r["speedup"] > 1]
        crossover[f"{f}x{n}"] = max(faster) if faster else None
    info = snnkernels.build_info()
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=platform.processor() or platform.machine(), load_average=os.getloadavg()[0],
                rows=ROWS, path="AVX-512" if info["avx512"] else "portable",
                event_max_density=info["event_max_density"]["float32"])
    name = "event_cpu" if info["avx512"] else "event_cpu_portable"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, name + ".json"), "w") as fh:
        json.dump(dict(meta=meta, rows=rows, crossover=crossover), fh, indent=2)
    with open(os.path.join(args.out, name + ".md"), "w") as fh:
        fh.write(f"# Event-driven synapse ({meta['path']} kernels) vs GEMM, against the input "
                 "spike rate\n\n")
        fh.write(f"R = {ROWS} rows (T=25, B=256), float32, binary x; torch {meta['torch']}, "
                 f"{meta['threads']} threads, 1-min load average {meta['load_average']:.2f}; "
                 f"median of {args.reps}. linear_lif's threshold: density <= "
                 f"{meta['event_max_density']}.\n\n")
        fh.write("| F x N | spike rate | fwd GEMM ms | fwd event ms | dW GEMM ms | dW event ms | "
                 "event speedup (fwd + dW) |\n|---|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            fh.write(f"| {r['features']}x{r['neurons']} | {r['rate']:.3f} | {r['gemm_fwd_ms']:.2f} | "
                     f"{r['event_fwd_ms']:.2f} | {r['gemm_dw_ms']:.2f} | {r['event_dw_ms']:.2f} | "
                     f"{r['speedup']:.2f}x |\n")
        fh.write("\nCrossover (largest measured rate at which the event path is faster): " +
                 ", ".join(f"{k}: {v if v is not None else 'never'}" for k, v in crossover.items())
                 + "\n")
    print("crossover:", crossover)


if __name__ == "__main__":
    main()
