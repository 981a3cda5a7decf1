"""Hidden state of snnkernels.nn.Leaky follows the input: it is created lazily (on the input's
device and dtype, with the input's batch shape), moves with the module (.to / .double()), and
restarts from zeros when the batch size changes (as snnTorch's does)."""

from __future__ import annotations

import snntorch
import torch

from snnkernels import nn as knn


def net(**options):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), knn.Leaky(beta=0.8, init_hidden=True,
                                                                 **options))


def test_state_is_created_lazily_on_the_inputs_dtype():
    model = net().double()
    assert model[1].mem.shape == (0,)
    out = model(torch.randn(2, 3, dtype=torch.float64))
    assert out.dtype == model[1].mem.dtype == torch.float64 and model[1].mem.shape == (2, 4)


def test_dtype_switch_mid_use():
    """float32 -> float64 -> float32 between steps: the state is converted with the module and
    continues (not reset): the membrane after the switch is beta * previous + input."""
    model = net(output=True)
    x = torch.randn(6, 2, 3)
    _, mem = model(x[0])
    model.double()
    assert model[1].mem.dtype == torch.float64
    assert torch.equal(model[1].mem, mem.double())
    spk, mem64 = model(x[1].double())
    assert spk.dtype == mem64.dtype == torch.float64
    cur = model[0](x[1].double())
    reset = (mem.double() > 1.0).double()
    expected = model[1].beta * mem.double() + cur - reset  # beta: float32(0.8), converted
    torch.testing.assert_close(mem64, expected, rtol=1e-12, atol=1e-12)
    model.float()
    spk, mem32 = model(x[2])
    assert spk.dtype == mem32.dtype == model[1].mem.dtype == torch.float32
    spk.sum().backward()  # gradients flow back through both dtype switches
    assert model[0].weight.grad is not None and model[0].weight.grad.dtype == torch.float32


def test_batch_size_change_restarts_from_zeros_like_snntorch():
    ours = knn.Leaky(beta=0.7, init_hidden=True, output=True)
    theirs = snntorch.Leaky(beta=0.7, init_hidden=True, output=True)
    for batch in (4, 4, 2, 2, 5):
        x = torch.rand(batch, 3) + 0.4
        (s1, m1), (s2, m2) = ours(x), theirs(x)
        assert m1.shape == (batch, 3)
        assert torch.equal(s1, s2) and torch.allclose(m1, m2, rtol=1e-6, atol=0)


def test_state_in_another_dtype_than_the_input_is_cast_like_snntorch():
    """A float32 state with a float64 input (module not converted): the membrane comes out in
    float64, as with snnTorch's type promotion. (snnTorch multiplies beta * mem in float32
    there, we in float64: equal to float32 rounding. Its spikes are float32 for any input
    dtype: its surrogate functions return .float(); ours keep the input's dtype.)"""
    ours = knn.Leaky(beta=0.7, output=True, init_hidden=True)
    theirs = snntorch.Leaky(beta=0.7, output=True, init_hidden=True)
    x = torch.rand(3, 2, 3, dtype=torch.float64) + 0.4
    ours(x[0].float())
    theirs(x[0].float())
    (s1, m1), (s2, m2) = ours(x[1]), theirs(x[1])
    assert m1.dtype == m2.dtype == s1.dtype == torch.float64
    assert torch.equal(s1, s2.double()) and torch.allclose(m1, m2, rtol=1e-6, atol=0)


def test_state_dict_has_no_hidden_state():
    """mem is a non-persistent buffer (as snnTorch's): checkpoints do not depend on batch size."""
    model = net()
    model(torch.randn(2, 3))
    assert "1.mem" not in model.state_dict()
    fresh = net()
    fresh.load_state_dict(model.state_dict())
