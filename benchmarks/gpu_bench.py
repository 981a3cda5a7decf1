"""GPU benchmark of the fused LIF op (run by benchmarks/gpu_check.sh on a lent GPU).

Times, with CUDA events, at T=25, B=256, N in {1024, 4096, 16384}:
  - the compiled ops alone (torch.ops.snnkernels.lif_forward / lif_backward), and their achieved
    bandwidth on the bytes that must move (forward: read x, write spk and mem; backward: read
    grad_spk, grad_mem and the saved mem, write grad_x) as a share of the device's copy
    bandwidth (a large tensor copy_, read + write bytes);
  - snnkernels.lif forward and forward+backward through autograd, with fixed and with learnable
    per-neuron beta/threshold;
  - the masked backward op of snnkernels.sparse (TopK 1%, temporal TopK 1%, ActiveWindow(0.2);
    compact output, as linear_lif uses it), and at the smallest N snnkernels.linear_lif with
    F = N and with F = 64, dense against TopK 0.5% / 1% / 5% / 25% and ActiveWindow: forward +
    backward,
    and the layer backward alone;
  - the peers: snnkernels.reference.lif (a plain PyTorch time loop), snnTorch's Leaky stepped in
    a Python loop, SpikingJelly's multi-step LIFNode with its CuPy/Triton backends (the peers that
    are not installed are reported as such; SpikingJelly's LIF differs by a factor beta on the
    reset, so it is a speed peer only).
Writes bench.json (after every measurement, so a timeout keeps what was done) and bench.md
under --out. `--device cpu` runs the same harness on the CPU kernels with wall-clock timing: a
smoke test of this script on machines without a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snnkernels  # noqa: E402
from snnkernels import surrogate as sg  # noqa: E402

SUPPORTED = {"cuda": importlib.import_module("snnkernels.lif").CUDA_DTYPES,
             "cpu": importlib.import_module("snnkernels.lif").CPU_DTYPES}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BETA = 0.9


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="output directory")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--T", type=int, default=25)
    p.add_argument("--B", type=int, default=256)
    p.add_argument("--N", default="1024,4096,16384", help="comma-separated neuron counts")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="dtypes for the fused op (peers run in float32)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--copy-mib", type=int, default=1024, help="tensor size of the copy benchmark")
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="soft time limit: later cases are recorded as skipped")
    return p.parse_args(argv)


class Timer:
    """Times fn() per iteration: CUDA events on the current stream, else wall clock."""

    def __init__(self, device: str, warmup: int, iters: int):
        self.cuda = device == "cuda"
        self.warmup, self.iters = warmup, iters

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn) -> dict:
        for _ in range(self.warmup):
            fn()
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.iters)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) for s, e in events]
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            times = []
            for _ in range(self.iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            peak = None
        return {"ms": statistics.median(times), "ms_min": min(times), "iters": self.iters,
                "peak_mib": peak}


class Report:
    """Accumulates results and rewrites bench.json / bench.md after every row."""

    def __init__(self, out: Path, meta: dict):
        self.out = out
        self.data = {"meta": meta, "copy": None, "checks": [], "results": [], "errors": []}

    def add(self, **row):
        self.data["results"].append(row)
        status = row.get("status", "ok")
        ms = f"{row['ms']:.3f} ms" if "ms" in row else status
        gbs = f"  {row['gbs']:.0f} GB/s ({row['pct_copy']:.0f}% of copy)" if "gbs" in row else ""
        print(f"  N={row['N']:>6} {row['dtype']:>8} {row['impl']:<34} {row['phase']:<8} {ms}{gbs}",
              flush=True)
        self.save()

    def save(self):
        tmp = self.out / "bench.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.out / "bench.json")
        (self.out / "bench.md").write_text(markdown(self.data))


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [f"# snnkernels LIF benchmark on {meta['device_name']}", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, T={meta['T']}, B={meta['B']}; "
             "median times (CUDA events on a GPU), peak allocated memory during the timed "
             "iterations.", ""]
    if data["copy"]:
        c = data["copy"]
        lines += [f"Copy bandwidth (copy_ of {c['mib']} MiB, read + write): {c['gbs']:.0f} GB/s",
                  ""]
    lines += ["Bandwidth columns count only the bytes that must move (forward: x, spk, mem; "
              "backward: grad_spk, grad_mem, mem, grad_x).", "",
              "| N | dtype | implementation | phase | ms | GB/s | % copy | x vs reference | "
              "peak MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    ref = {(r["N"], r["phase"]): r["ms"] for r in data["results"]
           if r["impl"] == "snnkernels.reference" and "ms" in r}
    for r in data["results"]:
        cells = [r["N"], r["dtype"], r["impl"], r["phase"]]
        if "ms" in r:
            speedup = ref.get((r["N"], r["phase"]))
            cells += [f"{r['ms']:.3f}", f"{r['gbs']:.0f}" if "gbs" in r else "",
                      f"{r['pct_copy']:.0f}" if "pct_copy" in r else "",
                      f"{speedup / r['ms']:.1f}" if speedup else "",
                      f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else ""]
        else:
            cells += [r.get("status", ""), "", "", "", ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if data["checks"]:
        lines += ["", "Fused vs reference (float32, smallest N): " + "; ".join(
            f"{c['quantity']} {c['value']:.2e}" for c in data["checks"])]
    if data["errors"]:
        lines += ["", "Errors:"] + [f"- {e}" for e in data["errors"]]
    return "\n".join(lines) + "\n"


def copy_bandwidth(timer: Timer, device: str, mib: int) -> dict:
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    return {"mib": mib, "ms": t["ms"], "gbs": 2 * src.numel() * 4 / (t["ms"] * 1e6)}


def peers(device: str):
    """(name, module factory) for the optional peers that import."""
    found, missing = {}, []
    try:
        import snntorch
        from snntorch import surrogate as snn_sg

        found["snntorch.Leaky loop"] = lambda: snntorch.Leaky(
            beta=BETA, spike_grad=snn_sg.atan(alpha=2.0)).to(device)
    except ImportError as exc:
        missing.append(f"snntorch: {exc!r}")
    try:
        import numpy as np

        # SpikingJelly 0.0.0.0.14 (the last release with the CuPy backend) still uses np.int,
        # removed in NumPy 1.24: restore the alias for it
        if not hasattr(np, "int"):
            np.int = int
        from spikingjelly.activation_based import neuron
        from spikingjelly.activation_based import surrogate as sj_sg

        for backend in ("cupy", "triton"):
            probe = neuron.LIFNode(step_mode="m")
            if backend not in probe.supported_backends:
                missing.append(f"spikingjelly LIFNode backend {backend}: not supported")
                continue
            found[f"spikingjelly LIFNode {backend}"] = (
                lambda b=backend: neuron.LIFNode(tau=2.0, surrogate_function=sj_sg.ATan(),
                                                 detach_reset=True, step_mode="m",
                                                 backend=b).to(device))
    except Exception as exc:  # not installed, or an API this script does not know
        missing.append(f"spikingjelly: {exc!r}")
    return found, missing


def peer_forward(name: str, module, x):
    if name.startswith("snntorch"):
        mem = module.init_leaky()
        spikes, membranes = [], []
        for xt in x:
            spk, mem = module(xt, mem)
            spikes.append(spk)
            membranes.append(mem)
        return torch.stack(spikes), torch.stack(membranes)
    module.reset()
    return module(x), None  # SpikingJelly returns spikes only: its backward starts from them


def backward_of(outputs, grads):
    pairs = [(o, g) for o, g in zip(outputs, grads) if o is not None and o.requires_grad]
    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


def bench_size(args, timer: Timer, report: Report, n: int, copy_gbs: float | None,
               deadline: float):
    device, steps, batch = args.device, args.T, args.B
    m = batch * n
    sgt = sg.resolve(None)
    p0, p1 = sgt.constants()
    smallest = n == min(int(v) for v in args.N.split(","))

    def over_budget(impl, dtype, passes):
        if time.monotonic() < deadline:
            return False
        for ps in passes:
            report.add(N=n, dtype=dtype, impl=impl, phase=ps, status="skipped (budget)")
        return True

    def timed(impl, dtype, ps, fn, nbytes=None):
        try:
            t = timer(fn)
        except Exception as exc:  # one failing case (e.g. out of memory) must not end the run
            report.data["errors"].append(f"N={n} {dtype} {impl} {ps}: {exc!r}"[:500])
            report.add(N=n, dtype=dtype, impl=impl, phase=ps, status=f"error: {exc!r}"[:80])
            return
        row = dict(N=n, dtype=dtype, impl=impl, phase=ps, **t)
        if nbytes is not None:
            row["bytes"] = nbytes
            row["gbs"] = nbytes / (t["ms"] * 1e6)
            if copy_gbs:
                row["pct_copy"] = 100 * row["gbs"] / copy_gbs
        report.add(**row)

    gen = torch.Generator(device=device).manual_seed(n)
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        if dtype not in SUPPORTED[device]:
            report.add(N=n, dtype=dname, impl="snnkernels op", phase="-",
                       status=f"skipped ({dname} not supported on {device})")
            continue
        if over_budget("snnkernels op", dname, ["fwd", "bwd"]):
            continue
        size = torch.finfo(dtype).bits // 8
        x = (torch.randn(steps, batch, n, device=device, generator=gen) * 0.5 + 0.2).to(dtype)
        g_spk, g_mem = torch.randn_like(x), torch.randn_like(x)
        acc = torch.float32
        scalar = {k: torch.full((1,), v, device=device, dtype=acc)
                  for k, v in (("beta", BETA), ("thr", 1.0), ("graded", 1.0))}
        x2, gs2, gm2 = x.view(steps, m), g_spk.view(steps, m), g_mem.view(steps, m)

        def op_fwd():
            return torch.ops.snnkernels.lif_forward(x2, None, scalar["beta"], scalar["thr"],
                                                    scalar["graded"], sgt.kind, p0, p1, 0, True)

        _, mem_saved, pre = op_fwd()

        def op_bwd(beta=scalar["beta"], thr=scalar["thr"], param_grads=False):
            return torch.ops.snnkernels.lif_backward(gs2, gm2, mem_saved, pre, None, beta, thr,
                                                     scalar["graded"], sgt.kind, p0, p1, 0, True,
                                                     param_grads)

        elems = steps * m
        timed("snnkernels op", dname, "fwd", op_fwd, 3 * elems * size)
        timed("snnkernels op", dname, "bwd", op_bwd, 4 * elems * size)
        beta_n = torch.full((n,), BETA, device=device)
        thr_n = torch.ones(n, device=device)
        timed("snnkernels op, param grads P=N", dname, "bwd",
              lambda: op_bwd(beta_n, thr_n, True), 4 * elems * size)
        timed("snnkernels op, param grads P=1", dname, "bwd",
              lambda: op_bwd(param_grads=True), 4 * elems * size)
        # The masked backward (snnkernels.sparse) as linear_lif calls it: compact output.
        k1 = max(1, n // 100)
        for impl, mask_args in (("masked op, TopK 1%", (1, n, k1, 0.0, False)),
                                ("masked op, TopK 1% temporal", (1, n, k1, 0.0, True)),
                                ("masked op, ActiveWindow(0.2)", (2, n, 0, 0.2, False))):
            timed(impl, dname, "bwd", lambda a=mask_args: torch.ops.snnkernels.lif_backward_masked(
                gs2, gm2, mem_saved, pre, None, scalar["beta"], scalar["thr"], scalar["graded"],
                sgt.kind, p0, p1, 0, True, False, *a, True), 3 * elems * size)
        del mem_saved, pre
        if smallest and dname == "float32":
            for features in (n, 64):  # the wide layer (F = N) and a tabular one (F = 64)
                bench_linear_lif(timed, x, g_spk, g_mem, features, gen)

        with torch.no_grad():
            timed("snnkernels.lif", dname, "fwd", lambda: snnkernels.lif(x, BETA),
                  3 * elems * size)
        xg = x.detach().requires_grad_(True)
        timed("snnkernels.lif", dname, "fwd+bwd",
              lambda: backward_of(snnkernels.lif(xg, BETA), (g_spk, g_mem)), 7 * elems * size)
        beta_p = torch.full((n,), BETA, device=device, requires_grad=True)
        thr_p = torch.ones(n, device=device, requires_grad=True)
        timed("snnkernels.lif, learnable beta/thr [N]", dname, "fwd+bwd",
              lambda: backward_of(snnkernels.lif(xg, beta_p, thr_p), (g_spk, g_mem)),
              7 * elems * size)
        if dname != "float32":
            continue

        if smallest:
            check_against_reference(report, xg, g_spk, g_mem)
        found, missing = peers(device)
        impls = [("snnkernels.reference", None)] + list(found.items())
        for impl, factory in impls:
            if over_budget(impl, dname, ["fwd", "fwd+bwd"]):
                continue
            try:
                module = factory() if factory else None
            except Exception as exc:
                report.data["errors"].append(f"{impl}: {exc!r}"[:500])
                continue

            def fwd(inp, impl=impl, module=module):
                if module is None:
                    return snnkernels.reference.lif(inp, BETA)
                return peer_forward(impl, module, inp)

            with torch.no_grad():
                timed(impl, dname, "fwd", lambda: fwd(x), 3 * elems * size)
            timed(impl, dname, "fwd+bwd", lambda: backward_of(fwd(xg), (g_spk, g_mem)),
                  7 * elems * size)
        for note in missing:
            if note not in report.data["meta"]["peers_missing"]:
                report.data["meta"]["peers_missing"].append(note)
        report.save()


def bench_linear_lif(timed, x, g_spk, g_mem, features, gen):
    """snnkernels.linear_lif [T, B, features] -> [T, B, N], dense against the masks: forward +
    backward, and the layer backward alone (dL/dx and dL/dW from one saved forward, as issue
    "Sparse gradient training" measures it)."""
    steps, batch, n = x.shape
    label = f"linear_lif F={features}"
    gen.manual_seed(features)
    xl = (torch.randn(steps, batch, features, device=x.device, generator=gen) * 0.5 + 0.2)
    xl.requires_grad_(True)
    wl = (torch.randn(n, features, device=x.device, generator=gen) * 2 / features ** 0.5)
    wl.requires_grad_(True)
    specs = [("dense", None)] + [(f"TopK {100 * q:g}%", snnkernels.sparse.TopK(fraction=q))
                                 for q in (0.005, 0.01, 0.05, 0.25)]
    for name, spec in specs + [("ActiveWindow(0.2)", snnkernels.sparse.ActiveWindow())]:
        timed(f"{label} {name}", "float32", "fwd+bwd", lambda spec=spec: backward_of(
            snnkernels.linear_lif(xl, wl, None, BETA, sparse=spec), (g_spk, g_mem)))
        outs = snnkernels.linear_lif(xl, wl, None, BETA, sparse=spec)
        timed(f"{label} {name}", "float32", "bwd", lambda outs=outs: torch.autograd.grad(
            outs, (xl, wl), (g_spk, g_mem), retain_graph=True))
        del outs


def check_against_reference(report: Report, x, g_spk, g_mem):
    """Largest differences between the fused op and the reference on the benchmark input."""
    results = []
    for lif in (snnkernels.lif, snnkernels.reference.lif):
        xi = x.detach().clone().requires_grad_(True)
        spk, mem = lif(xi, BETA)
        backward_of((spk, mem), (g_spk, g_mem))
        results.append((spk.detach(), mem.detach(), xi.grad))
    (s1, m1, g1), (s2, m2, g2) = results
    for quantity, value in (("spike mismatch fraction", (s1 != s2).float().mean().item()),
                            ("max |mem diff|", (m1 - m2).abs().max().item()),
                            ("max |grad_x diff|", (g1 - g2).abs().max().item())):
        report.data["checks"].append({"quantity": quantity, "value": value})
    report.save()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: CUDA is not available (use --device cpu for a smoke test)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    meta = {
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "snnkernels_build": snnkernels.build_info(), "T": args.T, "B": args.B,
        "N": [int(v) for v in args.N.split(",")], "warmup": args.warmup, "iters": args.iters,
        "peers_missing": [],
    }
    report = Report(out, meta)
    timer = Timer(args.device, args.warmup, args.iters)
    deadline = time.monotonic() + args.budget_s
    print(f"gpu_bench on {meta['device_name']} (torch {meta['torch']}, CUDA {meta['cuda']})",
          flush=True)
    try:
        report.data["copy"] = copy_bandwidth(timer, args.device, args.copy_mib)
        print(f"  copy bandwidth {report.data['copy']['gbs']:.0f} GB/s", flush=True)
    except Exception as exc:
        report.data["errors"].append(f"copy bandwidth: {exc!r}"[:500])
    report.save()
    copy_gbs = report.data["copy"]["gbs"] if report.data["copy"] else None
    for n in meta["N"]:
        try:
            bench_size(args, timer, report, n, copy_gbs, deadline)
        except Exception as exc:
            report.data["errors"].append(f"N={n}: {exc!r}"[:500])
            report.save()
        if cuda:
            torch.cuda.empty_cache()
    print(f"gpu_bench: wrote {out / 'bench.json'} and {out / 'bench.md'}; "
          f"{len(report.data['errors'])} errors")
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
