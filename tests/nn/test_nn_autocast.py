"""torch.autocast: on the CPU, autocast's Linear gives bfloat16 currents, which the CPU kernel
does not take; nn.Leaky / nn.LIF / TabularSNN upcast them to float32 inside an autocast region
(and only there). Results stay close to the float32 run (bfloat16 currents can flip a spike
that sits within rounding of the threshold), gradients reach every parameter, and it
compiles with fullgraph=True."""

from __future__ import annotations

import pytest
import torch

from snnkernels import nn as knn
from snnkernels.models import TabularSNN

CPU_BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def net():
    torch.manual_seed(0)
    model = TabularSNN(6, hidden=(16,), num_classes=3, T=5)
    with torch.no_grad():
        for layer in list(model.layers) + [model.output]:
            layer.linear.weight.mul_(4)  # a spiking regime in every layer
    return model


def test_tabular_snn_under_cpu_autocast():
    model = net()
    x = torch.randn(32, 6) * 1.5
    _, ref = model(x, record=True)
    with torch.autocast(**CPU_BF16):
        logits, spikes = model(x, record=True)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert logits.dtype == torch.float32 and torch.equal(compiled, logits)
    for a, b in zip(spikes, ref):
        assert b.mean() > 0.05
        assert (a == b).float().mean() > 0.9, "most spikes as in float32"
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters())


@pytest.mark.parametrize("cls", [knn.Leaky, knn.LIF])
def test_leaky_under_cpu_autocast(cls):
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), cls(beta=0.9))
    x = torch.randn(5, 2, 6)
    with torch.autocast(**CPU_BF16):
        spk, mem = model(x)
    assert spk.dtype == mem.dtype == torch.float32 and spk.shape == (5, 2, 4)


def test_no_upcast_outside_autocast():
    with pytest.raises(TypeError, match="bfloat16"):
        knn.LIF(beta=0.5)(torch.zeros(2, 3, dtype=torch.bfloat16))
