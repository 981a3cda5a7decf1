"""The op as a citizen of torch: torch.library.opcheck (schema, fake/meta implementation,
autograd registration, AOT dispatch), the eager autograd path against the registered one, and
torch.compile(fullgraph=True) of a small model, which must not graph-break and must give the
eager outputs and gradients."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import _args
from snnkernels import surrogate as S

from helpers import GRAD_TOL, assert_close, generator


def op_inputs(reset_delay: bool, period: int, requires_grad: bool, dtype=torch.float64):
    g = generator(5)
    t, m = 5, 12

    def p(lo, hi, n=period):
        return (torch.rand(n, generator=g, dtype=dtype) * (hi - lo) + lo).requires_grad_(requires_grad)

    x = (torch.randn(t, m, generator=g, dtype=dtype) + 0.5).requires_grad_(requires_grad)
    mem0 = (torch.randn(m, generator=g, dtype=dtype) * 0.5).requires_grad_(requires_grad)
    sg = S.fast_sigmoid(slope=4)
    return (x, mem0, p(0.3, 0.9), p(0.6, 1.2), p(0.5, 1.5), sg.kind, *sg.constants(),
            _args.RESET_IDS["zero"], reset_delay)


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("period", [1, 4, 12], ids=["scalar", "periodic", "per_element"])
@pytest.mark.parametrize("reset_delay", [True, False])
def test_opcheck_lif_forward(reset_delay, period, requires_grad):
    torch.library.opcheck(torch.ops.snnkernels.lif_forward.default,
                          op_inputs(reset_delay, period, requires_grad))


def test_opcheck_lif_forward_without_mem0():
    args = list(op_inputs(False, 4, True))
    args[1] = None
    torch.library.opcheck(torch.ops.snnkernels.lif_forward.default, tuple(args))


def linear_op_inputs(mask_args):
    g = generator(6)
    x = (torch.randn(4, 3, 5, generator=g, dtype=torch.float64) + 0.3).requires_grad_(True)
    w = (torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    b = (torch.randn(6, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    thr = torch.full((6,), 0.8, dtype=torch.float64, requires_grad=True)
    one = torch.ones(1, dtype=torch.float64)
    sg = S.atan()
    return (x, w, b, torch.full((1,), 0.9, dtype=torch.float64), thr, one, sg.kind,
            *sg.constants(), _args.RESET_IDS["subtract"], True, *mask_args)


EAGER_CASES = {  # op, its eager path in snnkernels._ops, inputs
    "lif_forward": ("lif_forward", lambda: op_inputs(False, 4, True)),
    "lif_forward_masked TopK": ("lif_forward_masked",
                                lambda: op_inputs(True, 4, True) + (1, 4, 2, 0.0, False)),
    "lif_forward_masked ActiveWindow": ("lif_forward_masked",
                                        lambda: op_inputs(False, 12, True) + (2, 4, 0, 0.3, False)),
    "linear_lif_forward dense": ("linear_lif_forward",
                                 lambda: linear_op_inputs((0, 0, 0.0, False))),
    "linear_lif_forward TopK": ("linear_lif_forward",
                                lambda: linear_op_inputs((1, 2, 0.0, True))),
}


@pytest.mark.parametrize("case", sorted(EAGER_CASES))
def test_eager_path_equals_registered_autograd(case):
    """snnkernels.lif / linear_lif record their graph through a torch.autograd.Function
    (snnkernels._ops._eager: cheaper per call than torch.library's wrapper); the op's registered
    autograd, which torch.compile and opcheck use, must give the same outputs and gradients, bit
    for bit (both call the same setup_context and backward)."""
    name, make = EAGER_CASES[case]
    results = []
    for call in (getattr(torch.ops.snnkernels, name).default, getattr(snnkernels._ops, name)):
        args = make()
        spk, mem = call(*args)[:2]
        g = generator(7)
        loss = (spk * torch.randn(spk.shape, generator=g, dtype=spk.dtype)).sum() + (
            mem * torch.randn(mem.shape, generator=g, dtype=mem.dtype)).sum()
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        results.append((spk, mem, torch.autograd.grad(loss, leaves)))
    (s1, m1, g1), (s2, m2, g2) = results
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    assert s1.abs().sum() > 0 and len(g1) == len(g2) >= 4
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    assert any(a.abs().sum() > 0 for a in g1)


class TinySNN(torch.nn.Module):
    """Linear -> LIF over T steps -> readout of the mean spike rate and final membrane."""

    def __init__(self, features=6, hidden=16, classes=3):
        super().__init__()
        self.fc = torch.nn.Linear(features, hidden)
        self.beta = torch.nn.Parameter(torch.full((hidden,), 0.8))
        self.threshold = torch.nn.Parameter(torch.tensor(0.7))
        self.readout = torch.nn.Linear(hidden, classes)

    def forward(self, x):  # x [T, B, F]
        spk, mem = snnkernels.lif(self.fc(x), self.beta, self.threshold,
                                  surrogate=S.fast_sigmoid(slope=10), reset_delay=False)
        return self.readout(spk.mean(0)) + 0.1 * self.readout(mem[-1])


def eager_and_compiled(backend):
    torch.manual_seed(0)
    model = TinySNN().double()
    x = torch.randn(8, 4, 6, dtype=torch.float64) * 2 + 0.5
    target = torch.tensor([0, 2, 1, 1])
    results = []
    for fn in (model, torch.compile(model, backend=backend, fullgraph=True)):
        model.zero_grad()
        out = fn(x)
        torch.nn.functional.cross_entropy(out, target).backward()
        results.append((out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    return results


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside inductor
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    """fullgraph=True raises on any graph break, so passing means the op and its autograd
    traced into one graph; values and every parameter gradient then match eager mode."""
    torch._dynamo.reset()
    (out_e, grads_e), (out_c, grads_c) = eager_and_compiled(backend)
    tol = GRAD_TOL[torch.float64]
    assert_close(out_c, out_e, tol, f"{backend} output")
    for name in grads_e:
        assert grads_e[name].abs().sum() > 0, f"eager grad {name} is zero: weak test"
        assert_close(grads_c[name], grads_e[name], tol, f"{backend} grad {name}")


def test_number_params_first_made_in_inference_mode():
    """Python-number parameters become one-value tensors reused across eager calls
    (snnkernels.lif.constant_param). One first made under torch.inference_mode must still serve
    a later training call (an inference tensor cannot be saved for backward), with the results
    of the same values given as tensors; -0.0 and 0.0 stay apart."""
    beta, threshold = 0.8123457, 0.7771235  # values no other test passes
    x = torch.randn(6, 4, 5, generator=generator(11), dtype=torch.float64) + 0.6
    with torch.inference_mode():
        snnkernels.lif(x, beta, threshold)
    results = []
    for b, t in ((beta, threshold), (torch.tensor(beta, dtype=torch.float64),
                                     torch.tensor(threshold, dtype=torch.float64))):
        xg = x.clone().requires_grad_()
        spk, mem = snnkernels.lif(xg, b, t)
        (spk.sum() + (mem * mem).sum()).backward()
        results.append((spk, mem, xg.grad))
    assert results[0][0].sum() > 0
    for a, b in zip(*results):
        assert torch.equal(a, b)
    from snnkernels.lif import constant_param
    assert torch.signbit(constant_param(-0.0, torch.float32, "cpu")).item()
    assert not torch.signbit(constant_param(0.0, torch.float32, "cpu")).item()
