"""Shared setup for the LIF microbenchmarks: inputs, this machine's copy bandwidth, and the
bandwidth bookkeeping every benchmark records in benchmark.extra_info.

Run with `pytest benchmarks` (or benchmarks/run_benchmarks.py, which also writes the results
files). The project's test run does not collect this directory (testpaths = ["tests"])."""

from __future__ import annotations

import functools
import statistics
import time

import pytest
import torch

T, B = 25, 256
NS = (256, 1024, 4096)
QUICK_NS = (256, 1024)
# Mean 0.2, std 1 drives about 20% of the neurons to spike at each step (steady from t = 1 on),
# so the spike/reset paths are exercised the way a working network exercises them.
INPUT_MEAN, INPUT_STD = 0.2, 1.0
SEED = 0
DTYPE = torch.float32

# float32 values per element that any implementation must move through memory:
# forward reads x and writes spk, mem; backward reads grad_spk, grad_mem and the saved mem,
# and writes grad_x.
VALUES_PER_ELEMENT = {"fwd": 3, "fwd+bwd": 7}

COPY_MIB = 256

_copy_bandwidth: dict | None = None
_records: list[dict] = []


def pytest_addoption(parser):
    parser.addoption(
        "--lif-quick",
        action="store_true",
        help="smoke run of the LIF benchmarks: N <= 1024, 3 rounds each, no warm-up",
    )
    parser.addoption(
        "--lif-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the LIF benchmarks (default: torch's default)",
    )


def pytest_configure(config):
    threads = config.getoption("--lif-threads", default=None)
    if threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def quick(pytestconfig) -> bool:
    return pytestconfig.getoption("--lif-quick")


def pytest_generate_tests(metafunc):
    if "n" in metafunc.fixturenames:
        quick = metafunc.config.getoption("--lif-quick")
        metafunc.parametrize("n", QUICK_NS if quick else NS, ids=lambda n: f"N{n}")


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first touch of pages, thread pool start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_copy_bandwidth(repeats: int = 9) -> dict:
    """GB/s of dst.copy_(src) on a 256 MiB float32 tensor, counting read + write bytes, with
    torch's thread count as the benchmarks use it and with one thread."""
    src = torch.ones(COPY_MIB * 2**20 // 4, dtype=DTYPE)
    dst = torch.empty_like(src).fill_(0)  # touch dst's pages before timing
    moved = 2 * src.numel() * src.element_size()
    threads = torch.get_num_threads()
    result = {"bytes": moved, "threads": threads}
    result["gbps"] = moved / _median_seconds(lambda: dst.copy_(src), repeats) / 1e9
    torch.set_num_threads(1)
    try:
        result["gbps_1thread"] = moved / _median_seconds(lambda: dst.copy_(src), repeats) / 1e9
    finally:
        torch.set_num_threads(threads)
    return result


@pytest.fixture(scope="session")
def copy_bandwidth() -> dict:
    global _copy_bandwidth
    if _copy_bandwidth is None:
        _copy_bandwidth = measure_copy_bandwidth()
    return _copy_bandwidth


class LifInputs:
    """x [T, B, N] and fixed upstream gradients for spk and mem, so that the fwd+bwd benchmark
    times only the op's forward and backward, not a loss."""

    def __init__(self, n: int):
        gen = torch.Generator().manual_seed(SEED + n)
        shape = (T, B, n)
        self.n = n
        self.x = torch.randn(shape, generator=gen, dtype=DTYPE) * INPUT_STD + INPUT_MEAN
        self.grad_spk = torch.randn(shape, generator=gen, dtype=DTYPE)
        self.grad_mem = torch.randn(shape, generator=gen, dtype=DTYPE)
        self.elements = self.x.numel()
        self._spike_rate = None

    def spike_rate(self, lif) -> float:
        if self._spike_rate is None:
            spk, _ = lif(self.x)
            self._spike_rate = spk.mean().item()
        return self._spike_rate


@pytest.fixture(scope="session")
def lif_inputs():
    """lif_inputs(n) -> LifInputs, built once per N for the whole session (~0.4 GB in all)."""
    return functools.cache(LifInputs)


@pytest.fixture
def record_bandwidth(benchmark, copy_bandwidth):
    """record_bandwidth(impl, mode, inputs, spike_rate) after the benchmark ran: stores the bytes
    that must move, achieved GB/s and % of copy bandwidth in benchmark.extra_info."""

    def record(impl: str, mode: str, inputs: LifInputs, spike_rate: float) -> None:
        moved = VALUES_PER_ELEMENT[mode] * inputs.elements * DTYPE.itemsize
        info = {
            "impl": impl,
            "mode": mode,
            "T": T,
            "B": B,
            "N": inputs.n,
            "dtype": str(DTYPE),
            "threads": torch.get_num_threads(),
            "spike_rate": spike_rate,
            "bytes": moved,
            "copy_gbps": copy_bandwidth["gbps"],
        }
        if benchmark.stats is not None:  # None under --benchmark-disable
            median = benchmark.stats.stats.median
            info["gbps"] = moved / median / 1e9
            info["pct_of_copy"] = 100 * info["gbps"] / copy_bandwidth["gbps"]
            _records.append({"name": benchmark.name, "median": median, **info})
        benchmark.extra_info.update(info)

    return record


def pytest_benchmark_update_machine_info(config, machine_info):
    import snnkernels
    import snntorch

    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["snntorch"] = snntorch.__version__
    machine_info["snnkernels_build_info"] = snnkernels.build_info()
    if _copy_bandwidth is not None:
        machine_info["copy_bandwidth"] = _copy_bandwidth


def pytest_terminal_summary(terminalreporter):
    if not _records:
        return
    cb = _copy_bandwidth
    tr = terminalreporter
    tr.section("LIF bandwidth on the bytes that must move")
    tr.write_line(
        f"copy bandwidth (dst.copy_(src), {COPY_MIB} MiB, read+write): {cb['gbps']:.1f} GB/s "
        f"at {cb['threads']} threads, {cb['gbps_1thread']:.1f} GB/s at 1 thread"
    )
    for r in _records:
        tr.write_line(
            f"{r['name']:<42} {r['median'] * 1e3:9.2f} ms  {r['gbps']:6.2f} GB/s  "
            f"{r['pct_of_copy']:5.1f}% of copy"
        )
