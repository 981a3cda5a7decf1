"""The executable specification: the LIF neuron of docs/semantics.md written as a readable
time loop in plain PyTorch, gradients by autograd. The fused kernels are tested against it.
It follows snnTorch 1.0.0's Leaky step by step (the same operations in the same order)."""

from __future__ import annotations

import numbers

import torch

from . import _args
from . import sparse as _sparse
from . import surrogate as _surrogate


class _SurrogateSpike(torch.autograd.Function):
    """H(z) forward (strict >), sigma'(z) backward."""

    @staticmethod
    def forward(ctx, z, surrogate):
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * ctx.surrogate.grad(z), None


class _MaskGrad(torch.autograd.Function):
    """Identity forward; the backward passes keep(grad), zeros elsewhere (a sparse mask)."""

    @staticmethod
    def forward(ctx, v, keep):
        ctx.keep = keep
        return v.view_as(v)

    @staticmethod
    def backward(ctx, grad):
        return torch.where(ctx.keep(grad), grad, torch.zeros_like(grad)), None


def topk_keep(grad: torch.Tensor, k: int) -> torch.Tensor:
    """Where grad is among the k largest |grad| of its row (last dim); ties to the lower index.
    torch.topk leaves the order of ties unspecified, so this takes the first k of a stable
    descending sort (what topk would give with ties to the lower index). NaN ranks as +inf.

    Args:
        grad: a floating-point tensor [..., N] (at least 1-dim), any device.
        k: how many entries of each row to keep, an int with 1 <= k <= N (not a bool).

    Returns:
        A bool tensor shaped like grad, on its device, True at the kept entries.

    Raises:
        TypeError: grad not a floating-point tensor; k not an int (a bool included).
        ValueError: a 0-dim grad; k outside [1, N].
    """
    if not isinstance(grad, torch.Tensor) or not grad.is_floating_point():
        what = f"dtype {grad.dtype}" if isinstance(grad, torch.Tensor) else type(grad).__name__
        raise TypeError(f"topk_keep: grad must be a floating-point tensor, got {what}")
    if grad.dim() == 0:
        raise ValueError("topk_keep: grad must be at least 1-dim [..., N], got a 0-dim tensor")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"topk_keep: k must be an int, got {type(k).__name__}")
    n = grad.shape[-1]
    # a slice end would not fail: 0 keeps nothing, a negative k N + k, a larger k everything
    if not 1 <= k <= n:
        raise ValueError(f"topk_keep: k must be in [1, N] with N = grad.shape[-1] = {n}, "
                         f"got {k}")
    mag = grad.abs()
    mag = torch.where(mag.isnan(), torch.full_like(mag, float("inf")), mag)
    order = torch.sort(mag, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(grad, dtype=torch.bool).scatter_(-1, order, True)


class _WindowedSurrogate:
    """sigma'(z) where |z| < width, 0 elsewhere (ActiveWindow)."""

    def __init__(self, surrogate, width):
        self.surrogate, self.width = surrogate, width

    def grad(self, z):
        return torch.where(z.abs() < self.width, self.surrogate.grad(z), torch.zeros_like(z))


def lif(
    x,
    beta,
    threshold=1.0,
    mem0=None,
    *,
    surrogate=None,
    reset_mechanism="subtract",
    reset_delay=True,
    graded_spikes_factor=1.0,
    sparse=None,
):
    """Same signature and results as snnkernels.lif, on any device and floating dtype torch
    supports, at the speed of a Python time loop. The sparse masks (snnkernels.sparse, whose
    docstring defines them) are gates on gradients: TopK on x_t's gradient (on h_t's with
    temporal=True), ActiveWindow on h_t's, with a windowed surrogate and the same-step reset
    detached.

    Args:
        x: the input current `[T, *batch]`, a floating-point tensor of any floating dtype, on
            any device.
        beta: as snnkernels.lif's (clamped to [0, 1]).
        threshold: as snnkernels.lif's.
        mem0: as snnkernels.lif's.
        surrogate: as snnkernels.lif's.
        reset_mechanism: as snnkernels.lif's.
        reset_delay: as snnkernels.lif's.
        graded_spikes_factor: as snnkernels.lif's.
        sparse: as snnkernels.lif's.

    Returns:
        The tuple (spk, mem), both shaped like x, of x's dtype and device.

    Raises:
        TypeError: as snnkernels.lif, except that no dtype is refused (x only needs to be
            floating-point).
        ValueError: as snnkernels.lif.
    """
    _args.check_x(x)
    beta = _args.check_neuron_param(beta, "beta", x)
    threshold = _args.check_neuron_param(threshold, "threshold", x)
    graded = _args.check_neuron_param(graded_spikes_factor, "graded_spikes_factor", x)
    mem0 = _args.check_mem0(mem0, x)
    _args.check_reset(reset_mechanism, reset_delay)
    sg = _surrogate.resolve(surrogate)
    mask = _sparse.resolve(sparse, x.shape[-1] if x.dim() >= 2 else 1)
    topk = mask is not None and mask.kind == _sparse.MASK_IDS["topk"]
    window = mask is not None and mask.kind == _sparse.MASK_IDS["active_window"]
    if window:
        sg = _WindowedSurrogate(sg, mask.width)

    def keep_topk(grad):
        return topk_keep(grad.reshape(-1, mask.row), mask.k).reshape(grad.shape)

    def spike(z):
        return _SurrogateSpike.apply(z, sg)

    beta_c = torch.as_tensor(beta, dtype=x.dtype, device=x.device).clamp(0, 1)
    thr = torch.as_tensor(threshold, dtype=x.dtype, device=x.device)
    g = torch.as_tensor(graded, dtype=x.dtype, device=x.device)
    batch = x.shape[1:]  # not x[0]: that fails for T = 0
    mem = x.new_zeros(batch) if mem0 is None else mem0.to(x.dtype).expand(batch)
    spikes, membranes = [], []
    for xt in x.unbind(0):
        if topk and not mask.temporal:
            xt = _MaskGrad.apply(xt, keep_topk)
        reset = spike(mem - thr).detach()
        if reset_mechanism == "subtract":
            mem = beta_c * mem + xt - reset * thr
        elif reset_mechanism == "zero":
            mem = beta_c * ((1 - reset) * mem) + xt
        else:
            mem = beta_c * mem + xt
        if topk and mask.temporal:
            mem = _MaskGrad.apply(mem, keep_topk)
        if window:
            active = ((mem - thr).abs() < mask.width).detach()
            mem = _MaskGrad.apply(mem, lambda grad, active=active: active.expand(grad.shape))
        fired = spike(mem - thr)
        if not reset_delay:
            do_reset = fired - reset  # snnTorch writes spk / graded - reset: the same value
            if window:
                do_reset = do_reset.detach()  # leak-only recursion: no gradient through a reset
            if reset_mechanism == "subtract":
                mem = mem - do_reset * thr
            elif reset_mechanism == "zero":
                mem = mem - do_reset * mem
        spikes.append(fired * g)
        membranes.append(mem)
    if not spikes:  # T = 0: empty outputs that are still in the graph, so backward runs
        return x * 0, x * 0
    return torch.stack(spikes), torch.stack(membranes)


def linear_lif(x, weight, bias, beta, threshold=1.0, *, surrogate=None,
               reset_mechanism="subtract", reset_delay=True, sparse=None):
    """Same signature and results as snnkernels.linear_lif: I = x W^T + b by a dense matmul,
    then lif(I, ...); with a sparse mask the matmul's backward sees the masked dL/dI.

    Args:
        x: the layer input `[T, B, F]`, a floating-point tensor of any floating dtype, on any
            device.
        weight: `[N, F]`, of x's dtype and device.
        bias: `[N]` or None, of x's dtype and device.
        beta: as in snnkernels.linear_lif.
        threshold: as in snnkernels.linear_lif.
        surrogate: as in snnkernels.lif.
        reset_mechanism: as in snnkernels.lif.
        reset_delay: as in snnkernels.lif.
        sparse: as in snnkernels.linear_lif.

    Returns:
        The tuple (spk, mem), both `[T, B, N]`, of x's dtype and device.

    Raises:
        TypeError: as snnkernels.linear_lif, except that no dtype is refused.
        ValueError: as snnkernels.linear_lif, except the limit on the rows `T * B`.
    """
    _args.check_linear(x, weight, bias)
    # checked here as linear_lif does: lif's errors would call the current's [B, N] x.shape[1:]
    _args.check_layer_params(x, weight.shape[0], beta, threshold)
    current = torch.matmul(x, weight.t())
    if bias is not None:
        current = current + bias
    return lif(current, beta, threshold, surrogate=surrogate, reset_mechanism=reset_mechanism,
               reset_delay=reset_delay, sparse=sparse)
