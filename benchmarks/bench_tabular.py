#!/usr/bin/env python
"""Training step of snnkernels.models.TabularSNN against the same network written the
snnTorch-tutorial way (Linear + snntorch.Leaky per layer, a Python loop over T), on the CPU or
(--device cuda) a GPU.

Checks first that both compute the same thing: from the same weights, 10 SGD steps in float64
give the same losses (max relative difference printed; it must stay below 1e-6: the forward is
identical, but snnTorch's spike functions return float32 even for float64 input, so its
gradients pass through float32 at every spike and agree with ours to ~1e-7 only). Then times one
training step (forward, cross-entropy on spike counts, backward, SGD update) in float32, median
of --reps with the networks taking turns step by step, at T=25, B=256, F=64, hidden H x 2 for
each --hidden (the float64 check runs on the CPU: the CUDA kernels take float32 and half types).
Writes tabular_{device}.{md,json} to --out (default benchmarks/results). Also times TabularSNN with
sparse=TopK(fraction=0.05) (meProp on the hidden layers; the second hidden layer's synaptic
backward runs sparse), and the tutorial network itself after the README's two-line switch,
`snnkernels.convert(model)` (its snntorch.Leaky layers replaced by snnkernels.nn.Leaky, still
called once per step).

    python benchmarks/bench_tabular.py [--hidden 128 512] [--reps 15] [--device cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import snntorch
import torch
from torch import nn

import snnkernels
from snnkernels.models import TabularSNN
from snnkernels.sparse import TopK
from snnkernels.study.environment import describe

T, B, F, CLASSES, BETA = 25, 256, 64, 2, 0.9
SPARSE = TopK(fraction=0.05)


class TutorialSNN(nn.Module):
    """The snnTorch tutorial's network: every step calls each Linear and Leaky once."""

    def __init__(self, hidden: int):
        super().__init__()
        widths = (F, hidden, hidden, CLASSES)
        self.fcs = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        # beta as a float64 tensor: snnTorch stores a Python float as a float32 buffer, whose
        # value (0.89999998) then differs from ours in float64 runs
        self.lifs = nn.ModuleList(
            snntorch.Leaky(beta=torch.tensor(BETA, dtype=torch.float64)) for _ in self.fcs)

    def forward(self, x):
        mems = [lif.init_leaky() for lif in self.lifs]
        count = 0
        for _ in range(T):
            h = x
            for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                # snnTorch's spikes are always float32; cast (0/1, lossless) for float64 runs
                h, mems[i] = lif(fc(h.to(fc.weight.dtype)), mems[i])
            count = count + h
        return count


def twins(hidden: int, dtype, sparse=None, device="cpu"):
    torch.manual_seed(0)
    ours = TabularSNN(F, hidden=(hidden, hidden), num_classes=CLASSES, T=T, beta=BETA,
                      sparse=sparse)
    ref = TutorialSNN(hidden)
    for fc, layer in zip(ref.fcs, list(ours.layers) + [ours.output]):
        fc.load_state_dict(layer.linear.state_dict())
    return ours.to(device, dtype), ref.to(device, dtype)


def data(dtype, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, F, generator=g, dtype=dtype)
    y = torch.randint(0, CLASSES, (B,), generator=g)
    return x.to(device), y.to(device)


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()  # also waits for a GPU to finish the step


def same_losses(hidden: int, steps: int = 10) -> float:
    ours, ref = twins(hidden, torch.float64)
    x, y = data(torch.float64)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (ours, ref)]
    worst = 0.0
    for _ in range(steps):
        a, b = (train_step(m, o, x, y) for m, o in zip((ours, ref), opts))
        worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
    return worst


def step_ms(models: dict, x, y, reps: int) -> dict:
    """Median step time of each model in ms. The models take turns step by step, so a busy
    spell of a shared machine falls on all of them alike and their ratios stay fair."""
    opts = {name: torch.optim.SGD(m.parameters(), lr=0.01) for name, m in models.items()}
    for _ in range(3):
        for name, m in models.items():
            train_step(m, opts[name], x, y)
    times = {name: [] for name in models}
    for _ in range(reps):
        for name, m in models.items():
            t0 = time.perf_counter()
            train_step(m, opts[name], x, y)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_tabular: --device cuda, but torch.cuda.is_available() is False")
    rows = []
    for hidden in args.hidden:
        diff = same_losses(hidden)
        if diff > 1e-6:
            raise SystemExit(f"H={hidden}: float64 losses differ by {diff:.2e} (relative)")
        ours, ref = twins(hidden, torch.float32, device=dev)
        x, y = data(torch.float32, dev)
        ms = step_ms(dict(ours=ours, ref=ref,
                          sparse=twins(hidden, torch.float32, SPARSE, dev)[0],
                          converted=snnkernels.convert(twins(hidden, torch.float32,
                                                             device=dev)[1])),
                     x, y, args.reps)
        ours_ms, ref_ms, sparse_ms, converted_ms = (ms[k] for k in ("ours", "ref", "sparse",
                                                                    "converted"))
        rows.append(dict(hidden=hidden, snnkernels_ms=ours_ms, snntorch_ms=ref_ms,
                         speedup=ref_ms / ours_ms, topk5_ms=sparse_ms,
                         topk5_speedup=ref_ms / sparse_ms, converted_ms=converted_ms,
                         converted_speedup=ref_ms / converted_ms, float64_loss_rel_diff=diff))
        print(f"H={hidden}x2: snnkernels {ours_ms:.1f} ms, TopK 5% {sparse_ms:.1f} ms, "
              f"converted tutorial net {converted_ms:.1f} ms, snnTorch {ref_ms:.1f} ms: "
              f"{ref_ms / ours_ms:.1f}x dense, {ref_ms / sparse_ms:.1f}x TopK, "
              f"{ref_ms / converted_ms:.1f}x converted; 10 float64 steps: losses agree to "
              f"{diff:.1e}", flush=True)
    env = describe(dev)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                revision=env["git_revision"], torch=torch.__version__,
                threads=torch.get_num_threads(), cpu=env["cpu"], device=dev, gpu=env.get("gpu"),
                load_average=os.getloadavg()[0], setup=f"T={T}, B={B}, F={F}, SGD, float32")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"tabular_{dev}.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=2)
    with open(os.path.join(args.out, f"tabular_{dev}.md"), "w") as f:
        f.write("# TabularSNN vs the snnTorch-tutorial network: one training step\n\n")
        f.write(f"{meta['date']}, revision {meta['revision']}; {meta['setup']}; "
                f"{meta['gpu'] or meta['cpu']}; torch {meta['torch']}, {meta['threads']} threads, "
                f"1-min load average {meta['load_average']:.2f}; median of {args.reps} steps, "
                "the four networks taking turns step by step.\n\n")
        f.write("| hidden | snnkernels ms | TopK 5% ms | converted ms | snnTorch ms | speedup "
                "dense | speedup TopK 5% | speedup converted | float64 loss rel. diff (10 steps) |\n")
        f.write("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['hidden']}x2 | {r['snnkernels_ms']:.1f} | {r['topk5_ms']:.1f} | "
                    f"{r['converted_ms']:.1f} | {r['snntorch_ms']:.1f} | {r['speedup']:.1f}x | "
                    f"{r['topk5_speedup']:.1f}x | {r['converted_speedup']:.1f}x | "
                    f"{r['float64_loss_rel_diff']:.1e} |\n")
        f.write("\nconverted: the snnTorch-tutorial network after `snnkernels.convert(model)`, "
                "still stepped once per time step.\n")


if __name__ == "__main__":
    main()
