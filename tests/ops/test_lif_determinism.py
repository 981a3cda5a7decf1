"""Determinism: the same inputs give the same bits on every run, and (on the CPU) for any thread
count: each neuron's sums run in time order on one thread, and parameter gradients are reduced
over neurons in a fixed order. Shapes span several chunks of 256 neurons so both threads work."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import surrogate as S

from helpers import RESETS, Case, ParamMode, assert_same_bits, make_case, run_lif

SHAPE = (6, 4, 700)  # M = 2800 neurons: 11 chunks; per-neuron period 700 (not a multiple of 256)


def mixed_case(dtype, device, seed=0) -> Case:
    """Scalar, per-neuron and per-element parameters at once, all learnable, plus mem0."""
    base = make_case(SHAPE, ParamMode("per_element", True), dtype, device, seed=seed)

    def leaf(t):
        return t.detach().clone().requires_grad_(True)

    return Case(x=base.x, beta=leaf(base.beta[0]),                        # [N]
                threshold=leaf(base.threshold[0, 0]),                     # 0-dim
                mem0=base.mem0, graded_spikes_factor=base.graded_spikes_factor)  # [B, N]


@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_same_bits_twice(device, dtype, reset_mechanism, reset_delay):
    case = mixed_case(dtype, device)
    kwargs = dict(surrogate=S.spike_rate_escape(beta=2, slope=3), reset_mechanism=reset_mechanism,
                  reset_delay=reset_delay)
    first = run_lif(snnkernels.lif, case, **kwargs)
    assert set(first.grads) == {"x", "beta", "threshold", "mem0", "graded_spikes_factor"}
    assert_same_bits(run_lif(snnkernels.lif, case, **kwargs), first, "second run")


@pytest.mark.parametrize("upstream", ["weighted_both", "spk_sum"])
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_same_bits_for_any_thread_count(restore_num_threads, dtype, reset_mechanism,
                                        reset_delay, upstream):
    case = mixed_case(dtype, "cpu", seed=1)
    kwargs = dict(surrogate=S.atan(), reset_mechanism=reset_mechanism, reset_delay=reset_delay,
                  upstream=upstream)
    results = {}
    for threads in sorted({1, 2, restore_num_threads}):  # also the machine's default count
        torch.set_num_threads(threads)
        assert torch.get_num_threads() == threads
        results[threads] = run_lif(snnkernels.lif, case, **kwargs)
    for threads, result in results.items():
        assert_same_bits(result, results[1], f"{threads} threads vs 1")
