"""The layers and the model on CUDA (issue "Drop-in layers" items 5 and 6): hidden state follows
the module between the CPU and the GPU mid-use; TabularSNN and LinearLIF (dense and sparse) on
CUDA equal the same modules on the CPU; nn.Leaky on CUDA equals snnTorch's Leaky on CUDA step by
step; CUDA autocast (bfloat16 / float16) runs and stays close to float32; TabularSNN compiles
with fullgraph=True on CUDA.

Tolerances: CUDA and CPU GEMMs sum in different orders, so float32 results are compared with
rtol = atol = 1e-4 (logits, membranes) and 1e-3 (gradients, which add up T * B terms); inputs are
scaled so that no membrane sits within rounding of the threshold. Every test skips (with
tests/conftest.py's reason) without a GPU or in a build without CUDA; benchmarks/gpu_check.sh runs
them on a GPU machine.
"""

from __future__ import annotations

import copy

import pytest
import torch

from snnkernels import nn as knn
from snnkernels import sparse as sp
from snnkernels.models import TabularSNN

from conftest import CUDA_SKIP

pytestmark = pytest.mark.skipif(CUDA_SKIP is not None, reason=CUDA_SKIP or "")

FWD = dict(rtol=1e-4, atol=1e-4)
GRAD = dict(rtol=1e-3, atol=1e-3)


def spiking_model(**options):
    torch.manual_seed(0)
    model = TabularSNN(6, hidden=(32, 32), num_classes=3, T=6, **options)
    with torch.no_grad():
        for layer in list(model.layers) + [model.output]:
            layer.linear.weight.mul_(3)  # a spiking regime in every layer
    return model


def grads(model):
    return [p.grad.detach().cpu() for p in model.parameters()]


def test_leaky_state_follows_module_between_cpu_and_cuda():
    """Steps on the CPU, .to("cuda"), steps on the GPU, back to the CPU: the membrane moves with
    the module and continues, matching a twin that stayed on the CPU."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5),
                                knn.Leaky(beta=0.8, init_hidden=True, output=True))
    twin = copy.deepcopy(model)
    x = torch.randn(6, 4, 3) * 2
    for t, device in enumerate(["cpu", "cpu", "cuda", "cuda", "cpu", "cpu"]):
        model.to(device)
        assert model[1].mem.device.type == device or model[1].mem.numel() == 0
        spk, mem = model(x[t].to(device))
        ref_spk, ref_mem = twin(x[t])
        assert spk.device.type == mem.device.type == model[1].mem.device.type == device
        torch.testing.assert_close(mem.cpu(), ref_mem, **FWD)
        assert torch.equal(spk.cpu(), ref_spk)


def test_leaky_batch_change_on_cuda_restarts_state_on_cuda():
    lif = knn.Leaky(beta=0.7, init_hidden=True, output=True).cuda()
    for batch in (4, 2):
        spk, mem = lif(torch.rand(batch, 3, device="cuda") + 0.4)
        assert mem.shape == (batch, 3) and lif.mem.device.type == "cuda"


def test_leaky_on_cuda_equals_snntorch_on_cuda():
    snntorch = pytest.importorskip("snntorch")
    torch.manual_seed(1)
    x = (torch.randn(8, 16, 10, device="cuda") + 0.5).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    ours = knn.Leaky(beta=0.85, learn_beta=True, learn_threshold=True).cuda()
    theirs = snntorch.Leaky(beta=0.85, learn_beta=True, learn_threshold=True).cuda()
    mem_a, mem_b = ours.init_leaky(), theirs.init_leaky()
    out_a, out_b = [], []
    for t in range(x.shape[0]):
        spk_a, mem_a = ours(x[t], mem_a)
        spk_b, mem_b = theirs(x2[t], mem_b)
        assert torch.equal(spk_a, spk_b)
        torch.testing.assert_close(mem_a, mem_b, rtol=1e-6, atol=1e-6)
        out_a.append(spk_a.sum() + mem_a.sum())
        out_b.append(spk_b.sum() + mem_b.sum())
    torch.stack(out_a).sum().backward()
    torch.stack(out_b).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    for name in ("beta", "threshold"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sparse", [None, sp.TopK(fraction=0.1), sp.ActiveWindow(0.2)],
                         ids=["dense", "topk10", "window0.2"])
def test_tabular_snn_on_cuda_equals_cpu(sparse):
    model = spiking_model(sparse=sparse, learn_beta=True)
    gpu = copy.deepcopy(model).cuda()
    x = torch.randn(64, 6) * 1.5
    logits, spikes = model(x, record=True)
    logits_g, spikes_g = gpu(x.cuda(), record=True)
    assert all(s.mean() > 0.02 for s in spikes), "every layer spikes"
    torch.testing.assert_close(logits_g.cpu(), logits, **FWD)
    target = torch.randint(0, 3, (64,))
    torch.nn.functional.cross_entropy(logits, target).backward()
    torch.nn.functional.cross_entropy(logits_g, target.cuda()).backward()
    for a, b in zip(grads(gpu), grads(model)):
        torch.testing.assert_close(a, b, **GRAD)


@pytest.mark.parametrize("sparse", [None, sp.TopK(k=3)], ids=["dense", "topk3"])
def test_linear_lif_module_on_cuda_equals_cpu(sparse):
    torch.manual_seed(2)
    layer = knn.LinearLIF(12, 20, beta=0.9, sparse=sparse, learn_threshold=True)
    with torch.no_grad():
        layer.weight.mul_(3)
    gpu = copy.deepcopy(layer).cuda()
    x = torch.randn(7, 5, 12)
    g = torch.randn(7, 5, 20)
    spk, mem = layer(x)
    spk_g, mem_g = gpu(x.cuda())
    assert torch.equal(spk_g.cpu(), spk) and spk.mean() > 0.05
    torch.testing.assert_close(mem_g.cpu(), mem, **FWD)
    (mem * g).sum().backward()
    (mem_g * g.cuda()).sum().backward()
    for a, b in zip(grads(gpu), grads(layer)):
        torch.testing.assert_close(a, b, **GRAD)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_tabular_snn_under_cuda_autocast(dtype):
    """Autocast gives the LIF half-precision currents, which the CUDA kernel takes directly
    (float32 inside); most spikes agree with the float32 run (a spike within half-precision
    rounding of the threshold may flip) and every parameter gets a float32 gradient."""
    model = spiking_model().cuda()
    x = torch.randn(64, 6, device="cuda") * 1.5
    _, ref = model(x, record=True)
    with torch.autocast(device_type="cuda", dtype=dtype):
        logits, spikes = model(x, record=True)
    assert spikes[0].dtype == dtype
    for a, b in zip(spikes, ref):
        assert b.mean() > 0.02
        assert (a.float() == b).float().mean() > 0.9, "most spikes as in float32"
    logits.float().sum().backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


def test_tabular_snn_compiles_fullgraph_on_cuda():
    model = spiking_model(sparse=sp.TopK(fraction=0.25)).cuda()
    x = torch.randn(32, 6, device="cuda") * 1.5
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, **FWD)
    compiled.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
