#!/usr/bin/env python
"""The median time of one TabularSNN training step (bench_tabular's shape: T=25, B=256, F=64,
hidden H x 2, 2 classes, cross-entropy, SGD) in this process, for A/B comparisons of builds
(benchmarks/results/tuning.md). Prints the median per-step process CPU time and wall time in ms;
on a busy machine run it on one thread (--threads 1) and compare the CPU time.

    python benchmarks/tabular_step.py [--hidden 128] [--sparse [--fraction 0.05]] [--threads 1]
                                      [--steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import snnkernels
from snnkernels.models import TabularSNN
from snnkernels.sparse import TopK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--sparse", action="store_true", help="sparse=TopK(fraction=FRACTION)")
    parser.add_argument("--fraction", type=float, default=0.05, help="TopK's fraction (0.05)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if args.hidden < 1 or args.threads < 1 or args.steps < 1:
        parser.error("--hidden, --threads and --steps must be >= 1")
    if not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TabularSNN(64, hidden=(args.hidden, args.hidden), num_classes=2, T=25, beta=0.9,
                       sparse=TopK(fraction=args.fraction) if args.sparse else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 64), torch.randint(0, 2, (256,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(20):
        step()
    cpu, wall = [], []
    for _ in range(args.steps):
        c0, w0 = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    print(f"{snnkernels.__file__} cpu_ms {statistics.median(cpu) * 1e3:.4f} "
          f"wall_ms {statistics.median(wall) * 1e3:.4f}")


if __name__ == "__main__":
    main()
