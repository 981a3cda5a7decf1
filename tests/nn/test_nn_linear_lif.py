"""nn.LinearLIF: the module computes what nn.Linear followed by snnkernels.lif computes (float64:
forward identical, gradients within GRAD_TOL), its sparse mode with k = N equals dense, and a
wrong sparse spec fails at construction."""

import pytest
import torch

import snnkernels
from snnkernels import sparse
from snnkernels.nn import LinearLIF

from helpers import GRAD_TOL, assert_close

T, B, F, N = 6, 4, 10, 12


def twin_outputs(layer: LinearLIF, x: torch.Tensor):
    """The layer's outputs and gradients, and those of Linear + lif with the same weights."""
    results = []
    for run in (lambda: layer(x), lambda: snnkernels.lif(
            torch.nn.functional.linear(x, layer.weight, layer.bias), layer.beta, layer.threshold,
            reset_mechanism=layer.reset_mechanism, reset_delay=layer.reset_delay)):
        spk, mem = run()
        w = torch.linspace(-1, 1, spk.numel(), dtype=x.dtype).view_as(spk)
        params = [x, layer.weight, layer.bias] + [p for p in (layer.beta,) if
                                                 isinstance(p, torch.Tensor)]
        grads = torch.autograd.grad((spk * w).sum() + (mem * w.flip(0)).sum(), params)
        results.append((spk, mem, grads))
    return results


@pytest.mark.parametrize("learn_beta", [False, True])
def test_linear_lif_module_matches_linear_then_lif(learn_beta):
    torch.manual_seed(0)
    layer = LinearLIF(F, N, beta=0.8, learn_beta=learn_beta, dtype=torch.float64)
    x = (torch.randn(T, B, F, dtype=torch.float64) * 2).requires_grad_()
    (spk, mem, grads), (spk_ref, mem_ref, grads_ref) = twin_outputs(layer, x)
    assert 0 < spk.mean() < 1, "inputs must make some, not all, neurons spike"
    assert torch.equal(spk, spk_ref) and torch.equal(mem, mem_ref)
    for name, g, g_ref in zip(("x", "weight", "bias", "beta"), grads, grads_ref):
        assert_close(g, g_ref, GRAD_TOL[torch.float64], f"grad {name}")


def test_linear_lif_module_topk_all_neurons_equals_dense():
    torch.manual_seed(1)
    dense = LinearLIF(F, N, dtype=torch.float64)
    topk = LinearLIF(F, N, sparse=sparse.TopK(k=N), dtype=torch.float64)
    topk.load_state_dict(dense.state_dict())
    x = (torch.randn(T, B, F, dtype=torch.float64) * 2).requires_grad_()
    outs = []
    for layer in (dense, topk):
        spk, mem = layer(x)
        outs.append((spk, mem) + torch.autograd.grad(spk.sum() + mem.sum(), (x, layer.weight)))
    for name, a, b in zip(("spk", "mem", "grad x", "grad weight"), *outs):
        assert_close(a, b, GRAD_TOL[torch.float64], name)


def test_linear_lif_module_rejects_bad_arguments():
    with pytest.raises(TypeError, match="sparse"):
        LinearLIF(F, N, sparse="topk")
    with pytest.raises(ValueError, match="k"):
        LinearLIF(F, N, sparse=sparse.TopK(k=N + 1))
    with pytest.raises(ValueError, match="out_features"):
        LinearLIF(F, 0)
