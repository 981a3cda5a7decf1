"""snnkernels.linear_lif: the fused synapse + neuron layer, I = x W^T + b followed by the LIF,
whose backward can turn a sparse gradient mask into speed (docs/semantics.md, "Sparse gradient
masks")."""

from __future__ import annotations

import torch

from . import _args, _ops
from . import sparse as _sparse
from . import surrogate as _surrogate
from .lif import _as_kernel_param, check_kernel_input, constant_param


def linear_lif(x, weight, bias, beta, threshold=1.0, *, surrogate=None,
               reset_mechanism="subtract", reset_delay=True, sparse=None):
    """spk, mem = LIF(x W^T + b) over all T steps (zero initial membrane).

    Forward: one GEMM for all T steps, then the fused LIF kernel. Backward, dense: the fused LIF
    backward, then GEMMs for dx, dW, db. Backward, sparse (CPU and CUDA): the fused LIF backward
    applies the mask and emits the surviving current gradients in compact form (TopK: values
    and int32 indices `[T*B, k]`; ActiveWindow: CSR), and dx, dW, db are computed from those
    entries alone (dx gathers rows of W; dW is accumulated per neuron in a fixed order, so the
    bits do not depend on the thread count or the launch configuration; no atomics on CUDA).
    The compact gradient is the only extra memory (on the CPU; the CUDA kernels' scratch is in
    docs/sparse.md): `T*B*k * (itemsize + 4)` bytes for TopK, `nnz * (itemsize + 4) + 8 *
    (T*B + 1)` for ActiveWindow.

    Args:
        x: the layer input [T, B, F]; dtypes and devices as snnkernels.lif's x.
        weight: [N, F], same dtype and device as x.
        bias: [N] or None, same dtype and device as x.
        beta: a real number, or a floating-point tensor broadcastable to the neuron shape
            [B, N] on x's device (a 0-dim tensor may also be on the CPU); differentiable when
            it requires grad. Clamped to [0, 1] in the forward, as snnkernels.lif's.
        threshold: as beta (not clamped).
        surrogate: as snnkernels.lif's.
        reset_mechanism: as snnkernels.lif's.
        reset_delay: as snnkernels.lif's.
        sparse: None or snnkernels.sparse.TopK / ActiveWindow (rows = the N neurons of one
            (t, b)).

    Returns:
        The tuple (spk, mem) of the spikes and the membrane, both [T, B, N], of x's dtype and
            device.

    Raises:
        TypeError: x, weight or bias not tensors, x not floating-point, weight or bias of
            another dtype than x, a dtype the device's kernel does not take; beta, threshold,
            surrogate, sparse or reset_delay of the wrong type (as snnkernels.lif).
        ValueError: x not [T, B, F], weight not [N, F] for it, bias not [N], weight or bias on
            another device than x, beta or threshold that does not broadcast to [B, N] or is on
            another device, an unknown reset_mechanism; with sparse=, a TopK k larger than N,
            more than 2^31 neurons N or more than 2^31 - 1 rows `T * B`.
        RuntimeError: a CUDA x given to a CPU-only build, or x on a device other than cpu,
            cuda or meta.
    """
    args = op_args(x, weight, bias, beta, threshold, surrogate, reset_mechanism, reset_delay,
                   sparse)
    steps, batch, _ = x.shape
    n = weight.shape[0]
    spk, mem, _, _ = _ops.linear_lif_forward(x.contiguous(), *args)
    return spk.view(steps, batch, n), mem.view(steps, batch, n)


def op_args(x, weight, bias, beta, threshold, surrogate, reset_mechanism, reset_delay,
            sparse) -> tuple:
    """linear_lif's arguments checked against x [T, B, F] (only its shape, dtype and device
    are read), as the op linear_lif_forward takes them after x."""
    _args.check_linear(x, weight, bias)
    steps, batch, _ = x.shape
    n = weight.shape[0]
    beta, threshold = _args.check_layer_params(x, n, beta, threshold)
    reset_id = _args.check_reset(reset_mechanism, reset_delay)
    sg = _surrogate.resolve(surrogate)
    mask = _sparse.resolve(sparse, n)
    check_kernel_input(x, "linear_lif")
    if mask is not None and steps * batch > _sparse.MAX_ROWS:
        raise ValueError(
            f"linear_lif with sparse=: x has T * B = {steps * batch} rows; the sparse synaptic "
            f"backward indexes rows with int32, so at most 2^31 - 1 = {_sparse.MAX_ROWS}")
    mask_args = (0, 0, 0.0, False) if mask is None else (mask.kind, mask.k, mask.width,
                                                         mask.temporal)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    neurons, m = (batch, n), batch * n
    p0, p1 = sg.constants()
    return (
        weight.contiguous(),
        None if bias is None else bias.contiguous(),
        _as_kernel_param(beta, neurons, m, acc, x.device),
        _as_kernel_param(threshold, neurons, m, acc, x.device),
        constant_param(1.0, acc, x.device),
        sg.kind,
        p0,
        p1,
        reset_id,
        reset_delay,
        *mask_args,
    )
