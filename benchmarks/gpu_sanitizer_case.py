"""Small forward+backward runs of snnkernels.lif for compute-sanitizer (memcheck, racecheck,
synccheck; see gpu_check.sh): every surrogate x reset x reset_delay combination once, with
learnable per-neuron beta/threshold, a learnable scalar graded factor and a learnable mem0, and
shapes chosen to reach every code path of the CUDA kernels (partial blocks, the three upstream
gradient forms, parameter periods P = 1 with a multi-pass reduction, 1 < P < 32, P >= 32, P = M,
empty inputs, float16/bfloat16), then lif and linear_lif with sparse= masks (sparse_cases).
Each CUDA result is also compared with the CPU kernels'.

    python benchmarks/gpu_sanitizer_case.py               # on CUDA
    python benchmarks/gpu_sanitizer_case.py --device cpu  # the driver itself: CPU kernels
                                                          # compared with snnkernels.reference
Exit status 1 when a float32 result disagrees with its comparison.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snnkernels  # noqa: E402
from snnkernels import surrogate as sg  # noqa: E402

SURROGATES = {
    "atan": sg.atan(),
    "fast_sigmoid": sg.fast_sigmoid(),
    "sigmoid": sg.sigmoid(),
    "spike_rate_escape": sg.spike_rate_escape(),
    "triangular": sg.triangular(),
    "straight_through_estimator": sg.straight_through_estimator(),
    "heaviside": sg.heaviside(),
}
RESETS = ("subtract", "zero", "none")
GRAD_MODES = ("full", "broadcast", "spk_only")  # grad_spk/grad_mem: [T, M]; one value; mem unused


def make_inputs(shape, param_shape, seed):
    """Leaf tensors on the CPU in float32; each run moves copies to its device and dtype."""
    g = torch.Generator().manual_seed(seed)
    batch = shape[1:]
    return {
        "x": torch.randn(shape, generator=g) * 0.8 + 0.3,
        "beta": torch.rand(param_shape, generator=g) * 1.4 - 0.2,  # some outside [0, 1]
        "threshold": torch.rand(param_shape, generator=g) + 0.5,
        "graded": torch.tensor(1.3),
        "mem0": torch.randn(batch, generator=g) * 0.5,
        "w_spk": torch.randn(shape, generator=g),
        "w_mem": torch.randn(shape, generator=g),
    }


def run(lif, inputs, device, dtype, surrogate, reset, delay, grad_mode):
    """Forward + backward on one device; returns outputs and the gradients of every leaf."""
    leaves = {
        "x": inputs["x"].to(device, dtype),
        "beta": inputs["beta"].to(device),
        "threshold": inputs["threshold"].to(device),
        "graded": inputs["graded"].to(device),
        "mem0": inputs["mem0"].to(device, dtype),
    }
    for t in leaves.values():
        t.requires_grad_(True)
    spk, mem = lif(
        leaves["x"], leaves["beta"], leaves["threshold"], leaves["mem0"], surrogate=surrogate,
        reset_mechanism=reset, reset_delay=delay, graded_spikes_factor=leaves["graded"],
    )
    if grad_mode == "full":
        loss = (spk * inputs["w_spk"].to(device, dtype)).sum() + (
            mem * inputs["w_mem"].to(device, dtype)).sum()
    elif grad_mode == "broadcast":
        loss = spk.sum() + mem.sum()
    else:
        loss = (spk * inputs["w_spk"].to(device, dtype)).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    out = {"spk": spk, "mem": mem}
    out.update({f"grad_{k}": g for k, g in zip(names, grads) if g is not None})
    return {k: v.detach().float().cpu() for k, v in out.items()}


def scaled_diff(a, b):
    """max |a - b| relative to the scale of b (at least 1)."""
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


def cases(device):
    """(name, shape, param shape, dtype, surrogate, reset, delay, grad_mode)."""
    reduced = [torch.float16, torch.bfloat16] if device == "cuda" else []
    combos = itertools.product(SURROGATES, RESETS, (True, False))
    for i, (s, r, d) in enumerate(combos):
        # 37 neurons: partial warps and blocks; P = 37 >= 32: the coalesced reduction path.
        dtype = torch.float32
        if reduced and i % 7 == 3:
            dtype = reduced[(i // 7) % 2]
        yield (f"{s}/{r}/delay={d}", (6, 3, 37), (37,), dtype, s, r, d, GRAD_MODES[i % 3])
    yield ("P=1, 3000 neurons (2-pass reduction)", (3, 3000), (), torch.float32, "atan",
           "subtract", True, "full")
    yield ("P=5 (1 < P < 32)", (4, 7, 5), (5,), torch.float32, "fast_sigmoid", "zero", False,
           "full")
    yield ("P=M (per element)", (4, 6, 9), (6, 9), torch.float32, "sigmoid", "subtract", False,
           "broadcast")
    yield ("T=0", (0, 2, 8), (8,), torch.float32, "atan", "subtract", True, "full")
    yield ("M=0", (3, 0, 8), (8,), torch.float32, "atan", "subtract", True, "full")


def sparse_cases():
    """(name, fn, shape, spec) for the sparse-gradient kernels (lif_masked_cuda.cu,
    linear_sparse_cuda.cu): rows longer than a selection block (300 > 256 threads), k = 1 and
    k = N, temporal TopK, ActiveWindow's CSR, empty inputs."""
    topk, window = snnkernels.sparse.TopK, snnkernels.sparse.ActiveWindow
    for fn in ("lif", "linear_lif"):
        yield fn, (5, 3, 300), topk(k=7)
        yield fn, (5, 3, 300), topk(k=7, temporal=True)
        yield fn, (4, 2, 37), topk(k=1, temporal=True)
        yield fn, (4, 2, 37), topk(k=37)
        yield fn, (5, 3, 300), window(0.3)
        yield fn, (0, 2, 8), topk(k=2)
        yield fn, (3, 0, 8), window(0.3)


def run_sparse(fn, shape, spec, device, dtype, seed):
    """Forward + backward of lif / linear_lif with `sparse=spec`; outputs and gradients."""
    g = torch.Generator().manual_seed(seed)
    steps, batch, n = shape
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 1.2
    w = torch.randn(n, n, generator=g, dtype=torch.float64) / max(n, 1) ** 0.5
    b = torch.rand(n, generator=g, dtype=torch.float64) * 0.3
    beta = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.5
    leaves = [t.to(device, dtype if i < 3 else torch.float32).requires_grad_(True)
              for i, t in enumerate((x, w, b, beta))]
    if fn == "lif":
        spk, mem = snnkernels.lif(leaves[0], leaves[3], sparse=spec)
    else:
        spk, mem = snnkernels.linear_lif(leaves[0], leaves[1], leaves[2], leaves[3], sparse=spec)
    loss = spk.float().sum() + mem.float().pow(2).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    out = {"spk": spk, "mem": mem}
    out.update({f"grad{i}": gr for i, gr in enumerate(grads) if gr is not None})
    return {k: v.detach().float().cpu() for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu to exercise the driver", file=sys.stderr)
        return 2
    failures = 0
    for seed, (name, shape, pshape, dtype, s, r, d, gmode) in enumerate(cases(args.device)):
        inputs = make_inputs(shape, pshape, seed)
        got = run(snnkernels.lif, inputs, args.device, dtype, SURROGATES[s], r, d, gmode)
        ref = run(snnkernels.lif if args.device == "cuda" else snnkernels.reference.lif, inputs,
                  "cpu", torch.float32, SURROGATES[s], r, d, gmode)
        # The reference returns no graph for T = 0, so compare the gradients both produced.
        diffs = {k: scaled_diff(got[k], ref[k]) for k in ref.keys() & got.keys()}
        worst = max(diffs, key=diffs.get)
        bad = dtype == torch.float32 and diffs[worst] > 1e-4
        failures += bad
        print(f"{'FAIL' if bad else 'ok  '} {name} [{gmode}, {str(dtype)[6:]}] "
              f"max scaled diff {diffs[worst]:.2e} ({worst})")
    for seed, (fn, shape, spec) in enumerate(sparse_cases()):
        for dtype in (torch.float32, torch.bfloat16) if args.device == "cuda" else (torch.float32,):
            got = run_sparse(fn, shape, spec, args.device, dtype, seed)
            ref = run_sparse(fn, shape, spec, "cpu", torch.float32, seed)
            diffs = {k: scaled_diff(got[k], ref[k]) for k in ref.keys() & got.keys()}
            worst = max(diffs, key=diffs.get) if diffs else "-"
            value = diffs.get(worst, 0.0)
            bad = dtype == torch.float32 and value > 1e-4
            failures += bad
            print(f"{'FAIL' if bad else 'ok  '} {fn} sparse={spec} {tuple(shape)} "
                  f"[{str(dtype)[6:]}] max scaled diff {value:.2e} ({worst})")
    if args.device == "cuda":
        torch.cuda.synchronize()
    against = "the CPU kernels" if args.device == "cuda" else "snnkernels.reference"
    print(f"gpu_sanitizer_case: {failures} float32 mismatches against {against}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
