"""Where the time of linear_lif's layer backward goes on a GPU: torch.profiler over the backward
alone (dL/dx and dL/dW from one saved forward), dense against TopK 1% and ActiveWindow(0.2), at
T=25, B=256, F=N=1024 float32 (gpu_bench.py's wide layer). Prints, per case, the wall time per
backward and the kernels and ops by total CUDA time.

    python benchmarks/gpu_profile_sparse.py [--iters 10] [--out DIR]   # needs a CUDA build
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snnkernels  # noqa: E402

T, B, F, N = 25, 256, 1024, 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_out"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_profile_sparse: CUDA is not available", file=sys.stderr)
        return 2
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(T, B, F, device="cuda", generator=g) * 0.5 + 0.2).requires_grad_(True)
    w = (torch.randn(N, F, device="cuda", generator=g) * 2 / F ** 0.5).requires_grad_(True)
    grads = (torch.randn(T, B, N, device="cuda", generator=g),
             torch.randn(T, B, N, device="cuda", generator=g))
    lines = []
    for name, spec in (("dense", None), ("TopK 1%", snnkernels.sparse.TopK(fraction=0.01)),
                       ("ActiveWindow(0.2)", snnkernels.sparse.ActiveWindow())):
        outs = snnkernels.linear_lif(x, w, None, 0.9, sparse=spec)

        def backward():
            return torch.autograd.grad(outs, (x, w), grads, retain_graph=True)

        for _ in range(3):
            backward()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            backward()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / args.iters * 1e3
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(args.iters):
                backward()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25,
                                          max_name_column_width=60)
        lines += [f"## {name}: {wall:.3f} ms wall per backward (mean of {args.iters})", "",
                  table, ""]
        print(lines[-4], flush=True)
        del outs
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "profile_sparse.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
