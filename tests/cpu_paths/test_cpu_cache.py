"""The cache of CPU outputs (snnkernels.cpu_cache, csrc/cpu/output_pool.cpp): outputs of 1 MiB or
more are reused across calls, what comes out of a reused buffer equals the reference
(the autouse debug-poison fixture fills every output with NaN first, so an element a kernel
leaves unwritten in a recycled buffer shows up), the cap and release work, bad settings get
clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

import snnkernels
from snnkernels import cpu_cache, reference

from helpers import generator

# [25, 128, 1311] float64 = 33.6 MB per [T, M] tensor: above glibc's 32 MiB mmap threshold.
LARGE = (25, 128, 1311)


@pytest.fixture
def cache_limit():
    saved = cpu_cache.info()["limit_bytes"] >> 20
    yield
    cpu_cache.set_limit(saved)


def large_input(seed: int, dtype=torch.float64) -> torch.Tensor:
    return (torch.randn(LARGE, generator=generator(seed), dtype=torch.float64) + 0.3).to(dtype)


def forward_backward(fn, x: torch.Tensor):
    x = x.clone().requires_grad_()
    spk, mem = fn(x, 0.9, 1.0)
    g = torch.randn(LARGE, generator=generator(99), dtype=x.dtype)
    (spk * g + mem * g.flip(0)).sum().backward()
    return spk.detach(), mem.detach(), x.grad


def test_reused_buffers_give_reference_results(cache_limit):
    cpu_cache.set_limit(1024)
    cpu_cache.release()
    forward_backward(snnkernels.lif, large_input(0))  # fills the cache
    before = cpu_cache.info()
    assert before["cached_bytes"] >= 3 * 33 * 10**6  # spk, mem and grad_x came back
    x = large_input(1)
    actual = forward_backward(snnkernels.lif, x)
    after = cpu_cache.info()
    assert after["hits"] - before["hits"] >= 3
    expected = forward_backward(reference.lif, x)
    # float64: forward identical, dL/dx to 1e-10 relative (the tolerances).
    assert torch.equal(actual[0], expected[0])
    assert torch.equal(actual[1], expected[1])
    torch.testing.assert_close(actual[2], expected[2], rtol=1e-10, atol=1e-12)
    assert actual[0].abs().sum() > 0 and actual[2].abs().sum() > 0  # not a silent all-zero case


def test_limit_zero_keeps_nothing_and_release_empties(cache_limit):
    cpu_cache.set_limit(1024)
    spk, mem = snnkernels.lif(large_input(2), 0.9)
    del spk, mem
    assert cpu_cache.info()["cached_bytes"] > 0
    cpu_cache.release()
    assert cpu_cache.info()["cached_bytes"] == 0
    cpu_cache.set_limit(0)
    before = cpu_cache.info()
    spk, mem = snnkernels.lif(large_input(3), 0.9)
    del spk, mem
    info = cpu_cache.info()
    assert info["cached_bytes"] == 0 and info["limit_bytes"] == 0
    # Caching off: outputs come from torch's allocator, the cache is not asked at all.
    assert (info["hits"], info["misses"]) == (before["hits"], before["misses"])


def test_lowering_the_limit_frees_down_to_it(cache_limit):
    cpu_cache.set_limit(1024)
    spk, mem = snnkernels.lif(large_input(4), 0.9)
    del spk, mem
    assert cpu_cache.info()["cached_bytes"] > 40 << 20
    cpu_cache.set_limit(40)
    assert 0 < cpu_cache.info()["cached_bytes"] <= 40 << 20


def test_outputs_under_1_mib_do_not_use_the_cache():
    before = cpu_cache.info()
    snnkernels.lif(torch.randn(25, 64, 64, dtype=torch.float64), 0.9)  # 819 KB each
    after = cpu_cache.info()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])


def test_pooled_output_resizes_and_keeps_its_data():
    spk, _ = snnkernels.lif(large_input(5), 0.9)
    head = spk[0].clone()
    spk.resize_(LARGE[0] + 5, *LARGE[1:])
    assert torch.equal(spk[0], head)


def test_two_threads_share_the_cache(cache_limit):
    cpu_cache.set_limit(1024)
    x = large_input(6, torch.float32)
    expected = snnkernels.lif(x, 0.9)[1]
    failures = []

    def work():
        for _ in range(4):
            if not torch.equal(snnkernels.lif(x, 0.9)[1], expected):
                failures.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_set_limit_rejects_bad_values(value, error):
    with pytest.raises(error, match="megabytes"):
        cpu_cache.set_limit(value)


@pytest.mark.parametrize("value", [2**43, 2**70])
def test_set_limit_rejects_a_cap_above_int64_bytes(value):
    with pytest.raises(ValueError, match=rf"megabytes must be at most {2**43 - 1} .*got {value}"):
        cpu_cache.set_limit(value)


def test_set_limit_takes_the_largest_cap(cache_limit):
    cpu_cache.set_limit(cpu_cache.MAX_MEGABYTES)
    assert cpu_cache.info()["limit_bytes"] == cpu_cache.MAX_MEGABYTES << 20


@pytest.mark.parametrize("value", ["abc", "-5", "12x"])
def test_bad_environment_value_fails_at_import(value):
    env = dict(os.environ, SNNKERNELS_CPU_CACHE_MB=value)
    run = subprocess.run([sys.executable, "-c", "import snnkernels"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "SNNKERNELS_CPU_CACHE_MB" in run.stderr and value in run.stderr


def test_environment_sets_the_limit():
    env = dict(os.environ, SNNKERNELS_CPU_CACHE_MB="7")
    code = "import snnkernels; print(snnkernels.cpu_cache.info()['limit_bytes'])"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert int(run.stdout) == 7 << 20


def test_mid_size_outputs_are_reused_and_correct(cache_limit):
    # [25, 256, 128] float32 = 3.3 MB per output: heap-sized for glibc, pooled here.
    cpu_cache.set_limit(1024)
    x = torch.randn(25, 256, 128, generator=generator(7), dtype=torch.float64) + 0.3
    snnkernels.lif(x.float(), 0.9)
    before = cpu_cache.info()
    spk, mem = snnkernels.lif(x.float(), 0.9)
    assert cpu_cache.info()["hits"] - before["hits"] == 2
    ref_spk, ref_mem = reference.lif(x, 0.9)
    # float32 kernel vs float64 reference: membranes to 1e-5 relative; spikes may differ only
    # where the float64 membrane is within that of the threshold.
    torch.testing.assert_close(mem.double(), ref_mem, rtol=1e-5, atol=1e-5)
    near = (ref_mem - 1.0).abs() < 1e-4
    assert torch.equal(spk.double()[~near], ref_spk[~near]) and spk.sum() > 0
