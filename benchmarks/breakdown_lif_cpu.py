#!/usr/bin/env python
"""Where the fused CPU LIF op's time goes, without a profiler: forward alone, backward alone
(the same graph replayed with retain_graph), and what the op's freshly allocated outputs cost in
page faults (first touch of new pages vs rewriting pages already touched). Diagnostic only;
run_benchmarks.py is the benchmark of record.

    python benchmarks/breakdown_lif_cpu.py [--threads K] [--n 256 1024 4096]

Try THP_MEM_ALLOC_ENABLE=1 (torch allocates >= 2 MB with transparent huge pages) to see how
much of the time is page faults."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

import snnkernels

T, B, BETA = 25, 256, 0.9


class Timing:
    """Median wall time of fn, and per call: minor page faults and the share of the process's
    CPU time spent in the kernel (page faults, mmap/munmap), from getrusage."""

    def __init__(self, fn, repeats: int):
        fn()
        times = []
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.ms = statistics.median(times) * 1e3
        self.faults = (after.ru_minflt - before.ru_minflt) / repeats
        user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        self.sys_share = system / max(user + system, 1e-9)

    def __str__(self) -> str:
        return f"{self.ms:7.2f} ms, {self.faults:6.0f} faults, {self.sys_share:4.0%} sys"


def breakdown(n: int, repeats: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn((T, B, n), generator=gen) + 0.2
    g_spk, g_mem = torch.randn_like(x), torch.randn_like(x)
    mb = x.numel() * x.element_size() / 1e6
    xg = x.detach().requires_grad_()
    spk, mem = snnkernels.lif(xg, BETA)

    fwd = Timing(lambda: snnkernels.lif(x, BETA), repeats)
    bwd = Timing(
        lambda: torch.autograd.grad((spk, mem), xg, (g_spk, g_mem), retain_graph=True), repeats
    )
    both = Timing(
        lambda: torch.autograd.grad(snnkernels.lif(xg, BETA), xg, (g_spk, g_mem)), repeats
    )
    # The forward writes two fresh [T, B, N] outputs; filling two such tensors either freshly
    # allocated or already touched isolates what allocation and first touch cost.
    a, b = torch.zeros_like(x), torch.zeros_like(x)
    fresh = Timing(lambda: (torch.empty_like(x).fill_(1), torch.empty_like(x).fill_(1)), repeats)
    touched = Timing(lambda: (a.fill_(1), b.fill_(1)), repeats)
    copy = Timing(lambda: a.copy_(x), repeats)
    print(f"N={n} ({mb:.1f} MB per [T, B, N] tensor)")
    for what, t, values in (("fwd", fwd, 3), ("bwd alone", bwd, 4), ("fwd+bwd", both, 7),
                            ("fill 2 fresh tensors", fresh, 2), ("fill 2 touched", touched, 2),
                            ("copy x into touched", copy, 2)):
        print(f"  {what:<22} {t}  {values * mb / t.ms:6.2f} GB/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for n in args.n:
        breakdown(n, args.repeats)


if __name__ == "__main__":
    main()
