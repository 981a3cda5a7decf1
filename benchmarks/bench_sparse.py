#!/usr/bin/env python
"""Sparse-gradient linear_lif on the CPU: layer backward time and full step time
(forward + backward) of snnkernels.linear_lif with TopK masks at several densities, against the
dense fused layer (dense mode: fused LIF backward + GEMMs), plus ActiveWindow(0.2) at its own
density; peak memory of one step; targets of the issue "Sparse gradient training". Writes
<out>/sparse_cpu.md and <out>/sparse_cpu.json (default out: benchmarks/results/).

    python benchmarks/bench_sparse.py [--out DIR] [--reps 7] [--quick] [--threads N]

Setup: x ~ N(0, 1) [T, B, F] float32, W ~ N(0, 1/F) * 2.5, bias 0.2, beta 0.9 (per neuron,
learnable), threshold 1.0, atan surrogate, subtract reset with delay; a fixed random upstream
gradient for spk is passed directly (no loss, none into mem), as in the LIF benchmarks. "layer backward" times torch.autograd.grad of
(x, W, b, beta) from the forward's outputs; "step" times forward + backward. Minimum over
--reps interleaved rounds (medians in the JSON).
Peak memory: peak RSS (VmHWM, reset before the step) minus RSS before one step, in a fresh
subprocess after a warm-up step, with snnkernels.cpu_cache off.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import snnkernels
from snnkernels import sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = {"wide": (25, 256, 1024, 1024), "tabular": (25, 256, 64, 512)}  # T, B, F, N
DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.10, 0.25)
# (what, layer, density, mode, required speedup over dense)
TARGETS = (
    ("layer backward speedup at 1% density", "wide", 0.01, "bwd", 5.0),
    ("layer backward speedup at 5% density", "wide", 0.05, "bwd", 2.0),
    ("full step speedup at 1% density", "wide", 0.01, "step", 2.0),
)


def make_inputs(layer: str, seed: int = 0):
    t, b, f, n = LAYERS[layer]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, b, f, generator=g)
    w = (torch.randn(n, f, generator=g) * (2.5 / f ** 0.5)).requires_grad_()
    bias = torch.full((n,), 0.2, requires_grad=True)
    beta = torch.full((n,), 0.9, requires_grad=True)
    up = torch.randn(t, b, n, generator=g)
    return x.requires_grad_(), w, bias, beta, up


def spec_for(name: str):
    if name == "dense":
        return None
    if name == "window0.2":
        return sp.ActiveWindow(0.2)
    return sp.TopK(fraction=float(name))


def forward(inputs, spec):
    x, w, bias, beta, _ = inputs
    return snnkernels.linear_lif(x, w, bias, beta, 1.0, sparse=spec)


def backward(inputs, spk):
    x, w, bias, beta, up = inputs
    return torch.autograd.grad(spk, [x, w, bias, beta], grad_outputs=up)


def time_once(inputs, spec) -> tuple:
    t0 = time.perf_counter()
    spk, _ = forward(inputs, spec)
    t1 = time.perf_counter()
    backward(inputs, spk)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, t2 - t0


def time_configs(inputs, names, reps: int) -> dict:
    """Rounds over all configurations (interleaved, so a burst of load from other processes
    hits all of them alike); per configuration the minimum and the median over the rounds.
    Speedups use the minima: on a shared machine the minimum is the run least disturbed."""
    for name in names:  # warm-up
        time_once(inputs, spec_for(name))
    samples = {name: [] for name in names}
    for _ in range(reps):
        for name in names:
            samples[name].append(time_once(inputs, spec_for(name)))
    out = {}
    for name, runs in samples.items():
        r = {}
        for i, key in enumerate(("fwd", "bwd", "step")):
            values = [run[i] * 1e3 for run in runs]
            r[f"{key}_ms"] = min(values)
            r[f"{key}_median_ms"] = statistics.median(values)
        out[name] = r
    return out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_child(layer: str, name: str) -> None:
    """In a fresh process: MiB by which the peak RSS of one step (forward + backward) exceeds
    the RSS before it (inputs allocated). The kernel's peak (VmHWM) is reset first by writing 5
    to /proc/self/clear_refs, so imports that peaked higher do not hide the step. The CPU output
    cache is off here: with it, the warm-up step's freed outputs stay resident and the measured
    step reuses them, which hides what a step allocates."""
    snnkernels.cpu_cache.set_limit(0)
    inputs = make_inputs(layer)
    spec = spec_for(name)
    spk, _ = forward(inputs, spec)  # warm-up: allocator and thread pool
    backward(inputs, spk)
    del spk
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    spk, _ = forward(inputs, spec)
    backward(inputs, spk)
    print(json.dumps({"peak_growth_mib": (_status_kib("VmHWM") - before) / 1024}))


def peak_memory(layer: str, name: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", layer, name],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"]


def compact_bytes(layer: str, density: float | None, itemsize: int = 4) -> int:
    """TopK's compact gradient: values + int32 indices, T*B rows of k."""
    t, b, _, n = LAYERS[layer]
    k = n if density is None else max(1, round(density * n))
    return t * b * k * (itemsize + 4)


def measured_density(inputs, spec) -> float:
    """Share of current-gradient entries the mask keeps (what the sparse backward touches)."""
    x, w, bias, beta, up = inputs
    spk, mem = snnkernels.linear_lif(x.detach(), w.detach(), bias.detach(), 0.9, 1.0)
    if isinstance(spec, sp.ActiveWindow):
        return ((mem - 1.0).abs() < spec.width).double().mean().item()
    return spec.k_for(w.shape[0]) / w.shape[0]


def run(args) -> dict:
    names = ["dense"] + [str(d) for d in DENSITIES] + ["window0.2"]
    results = {}
    for layer in LAYERS:
        inputs = make_inputs(layer)
        rows = time_configs(inputs, names, args.reps)
        for name, r in rows.items():
            spec = spec_for(name)
            r["density"] = 1.0 if spec is None else measured_density(inputs, spec)
            if not args.quick and name in ("dense", "0.01", "window0.2"):
                r["peak_growth_mib"] = peak_memory(layer, name)
            if isinstance(spec, sp.TopK) or spec is None:
                r["compact_bytes"] = compact_bytes(layer, None if spec is None else float(name))
            print(f"{layer:8s} {name:10s} " + " ".join(
                f"{k}={v:.4g}" for k, v in r.items()), flush=True)
        dense = rows["dense"]
        for r in rows.values():
            r["bwd_speedup"] = dense["bwd_ms"] / r["bwd_ms"]
            r["step_speedup"] = dense["step_ms"] / r["step_ms"]
        results[layer] = rows
    return results


def markdown(summary: dict) -> str:
    m = summary["machine"]
    lines = [
        "# Sparse-gradient linear_lif, CPU",
        "",
        f"- date: {m['date']}; git revision {m['revision']}; torch {m['torch']}, "
        f"{m['threads']} torch threads, {m['cpus']} logical CPUs; minimum of {m['reps']} "
        "interleaved rounds (median in the JSON); load average before / after: "
        f"{m['load_before']} / {m['load_after']}",
        "- setup: see benchmarks/bench_sparse.py's docstring (float32, atan, subtract reset, "
        "TopK(fraction=density) unless named; dense = fused LIF backward + GEMMs)",
        "- compact gradient bytes (TopK): T*B*k*(4 + 4) (float32 values + int32 indices); the "
        "dense current gradient it replaces is T*B*N*4 bytes",
        "",
    ]
    for layer, rows in summary["results"].items():
        t, b, f, n = LAYERS[layer]
        lines += [f"## {layer}: T={t}, B={b}, F={f}, N={n}", "",
                  "| mask | density | fwd ms | layer bwd ms | step ms | bwd speedup | "
                  "step speedup | compact grad MiB | peak RSS growth MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in rows.items():
            label = name if name in ("dense", "window0.2") else f"TopK {float(name):.1%}"
            cb = r.get("compact_bytes")
            lines.append(
                f"| {label} | {r['density']:.2%} | {r['fwd_ms']:.2f} | {r['bwd_ms']:.2f} | "
                f"{r['step_ms']:.2f} | {r['bwd_speedup']:.2f}x | {r['step_speedup']:.2f}x | "
                f"{'' if cb is None or name == 'dense' else f'{cb / 2**20:.2f}'} | "
                f"{r['peak_growth_mib']:.0f} |" if "peak_growth_mib" in r else
                f"| {label} | {r['density']:.2%} | {r['fwd_ms']:.2f} | {r['bwd_ms']:.2f} | "
                f"{r['step_ms']:.2f} | {r['bwd_speedup']:.2f}x | {r['step_speedup']:.2f}x | "
                f"{'' if cb is None or name == 'dense' else f'{cb / 2**20:.2f}'} |  |")
        lines.append("")
    lines += ["## Targets (wide layer)", "", "| target | required | measured | result |",
              "|---|---:|---:|---|"]
    for t in summary["targets"]:
        lines.append(f"| {t['what']} | >= {t['required']:.1f}x | {t['measured']:.2f}x | "
                     f"{'PASS' if t['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="no memory subprocesses, 3 reps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--memory-child", nargs=2, metavar=("LAYER", "MASK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        peak_memory_child(*args.memory_child)
        return 0
    if args.quick:
        args.reps = 3
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    results = run(args)
    load_after = os.getloadavg()[0]
    targets = []
    for what, layer, density, mode, required in TARGETS:
        measured = results[layer][str(density)][f"{mode}_speedup"]
        targets.append({"what": what, "required": required, "measured": measured,
                        "pass": measured >= required})
    revision = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    summary = {
        "machine": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "revision": revision, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "reps": args.reps,
                    "load_before": round(load_before, 2), "load_after": round(load_after, 2)},
        "results": results,
        "targets": targets,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sparse_cpu.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary)
    (args.out / "sparse_cpu.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
