"""snnTorch/snnkernels surrogate pairs and parity inputs, shared by the op's and the layers'
parity tests against snnTorch 1.0.0."""

from __future__ import annotations

import pytest
import snntorch.surrogate as sts
import torch

from snnkernels import surrogate as S

from helpers import generator

# (snnTorch factory, snnkernels factory, kwargs): defaults, plus non-default parameters
SURROGATE_PAIRS = [
    pytest.param(sts.atan, S.atan, {}, id="atan"),
    pytest.param(sts.atan, S.atan, {"alpha": 0.7}, id="atan-alpha0.7"),
    pytest.param(sts.fast_sigmoid, S.fast_sigmoid, {}, id="fast_sigmoid"),
    pytest.param(sts.fast_sigmoid, S.fast_sigmoid, {"slope": 3}, id="fast_sigmoid-slope3"),
    pytest.param(sts.sigmoid, S.sigmoid, {}, id="sigmoid"),
    pytest.param(sts.sigmoid, S.sigmoid, {"slope": 4}, id="sigmoid-slope4"),
    pytest.param(sts.spike_rate_escape, S.spike_rate_escape, {}, id="spike_rate_escape"),
    pytest.param(sts.spike_rate_escape, S.spike_rate_escape, {"beta": 2, "slope": 5},
                 id="spike_rate_escape-beta2-slope5"),
    pytest.param(sts.triangular, S.triangular, {}, id="triangular"),
    pytest.param(sts.triangular, S.triangular, {"threshold": 0.4}, id="triangular-threshold0.4"),
    pytest.param(sts.straight_through_estimator, S.straight_through_estimator, {},
                 id="straight_through_estimator"),
    pytest.param(sts.heaviside, S.heaviside, {}, id="heaviside"),
]

T, B, N = 6, 4, 5


def parity_inputs(seed: int, per_neuron: bool) -> dict:
    """float32 inputs; x in [-0.4, 1.6] and beta <= 0.85 keep the membrane above about -2.7, so
    z = U - threshold > -3.5 (snnTorch's float32 sigmoid backward overflows below that)."""
    g = generator(seed)
    p = (N,) if per_neuron else ()
    return {
        "x": torch.rand(T, B, N, generator=g) * 2.0 - 0.4,
        "mem0": torch.rand(B, N, generator=g) * 2.0 - 1.0,
        "beta": torch.rand(p, generator=g) * 0.5 + 0.35,
        "threshold": torch.rand(p, generator=g) * 0.5 + 0.75,
        "graded_spikes_factor": torch.rand(p, generator=g) + 0.5,
        "w_spk": torch.randn(T, B, N, generator=g),
        "w_mem": torch.randn(T, B, N, generator=g),
    }


def leaf(t):
    return t.detach().clone().requires_grad_(True)
