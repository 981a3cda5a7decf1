"""The op as a citizen of torch: torch.library.opcheck (schema, fake/meta implementation,
autograd registration, AOT dispatch) and torch.compile(fullgraph=True) of a small model, which
must not graph-break and must give the eager outputs and gradients."""

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
