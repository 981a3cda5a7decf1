"""snnkernels.linear_lif: the fused synapse + neuron layer, dense and with sparse masks (the
synaptic backward from the compact gradient), against snnkernels.reference.linear_lif (dense
matmuls, torch masks); determinism; opcheck; and the bad inputs of the sparse specs."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import reference
from snnkernels import sparse as sp
from snnkernels import surrogate as S

from helpers import GRAD_TOL, Tol, assert_close, generator
from linear_cases import layer_inputs, run_layer

SPECS = [
    pytest.param(None, id="dense"),
    pytest.param(sp.TopK(k=1), id="topk1"),
    pytest.param(sp.TopK(fraction=0.05), id="topk-frac0.05"),
    pytest.param(sp.TopK(k=6, temporal=True), id="topk6-temporal"),
    pytest.param(sp.ActiveWindow(0.2), id="window0.2"),
    pytest.param(sp.ActiveWindow(1e30), id="window-huge"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("spec", SPECS)
def test_matches_reference(spec, reset_delay, dtype):
    inputs = layer_inputs(f=70, dtype=dtype)  # F = 70: a full column block of 64 and a tail
    kwargs = dict(sparse=spec, reset_delay=reset_delay, surrogate=S.fast_sigmoid(slope=5))
    spk, mem, grads = run_layer(snnkernels.linear_lif, inputs, **kwargs)
    spk_r, mem_r, grads_r = run_layer(reference.linear_lif, inputs, **kwargs)
    assert 0.05 < spk_r.mean() < 0.95, "inputs give too few or too many spikes"
    assert_close(spk, spk_r, Tol(0.0), "spk")
    # float64: the synaptic GEMMs may sum in another order than the reference's (the BLAS picks
    # its blocking by thread count and load), so a membrane that cancels to near zero can differ
    # by ~eps64 of the summed magnitude: measured against max|expected|, not each element.
    assert_close(mem, mem_r, Tol(1e-6, 1e-6) if dtype == torch.float32 else Tol(1e-12, 1.0), "mem")
    for name in grads_r:
        assert_close(grads[name], grads_r[name], GRAD_TOL[dtype], f"grad {name}")
        assert grads_r[name].abs().sum() > 0, f"grad {name} is zero: weak test"


@pytest.mark.parametrize("spec", [SPECS[2], SPECS[4]])
def test_without_bias_and_fixed_params(spec):
    inputs = layer_inputs(bias=False, learn=False)
    spk, mem, grads = run_layer(snnkernels.linear_lif, inputs, sparse=spec)
    _, _, grads_r = run_layer(reference.linear_lif, inputs, sparse=spec)
    assert set(grads) == {"x", "weight"}
    for name in grads_r:
        assert_close(grads[name], grads_r[name], GRAD_TOL[torch.float64], f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("spec", SPECS)
def test_same_bits_twice_and_for_any_thread_count(restore_num_threads, spec, dtype):
    # F = 150: two full column blocks of 64 and a tail, so every path of the gathers runs
    inputs = layer_inputs(t=5, b=24, f=150, n=200, dtype=dtype, seed=2)
    results = {}
    for threads in sorted({1, 2, restore_num_threads}):
        torch.set_num_threads(threads)
        results[threads] = run_layer(snnkernels.linear_lif, inputs, sparse=spec)
    results["again"] = run_layer(snnkernels.linear_lif, inputs, sparse=spec)
    for name, (spk, mem, grads) in results.items():
        spk1, mem1, grads1 = results[1]
        assert torch.equal(spk, spk1) and torch.equal(mem, mem1), name
        for key in grads1:
            assert torch.equal(grads[key], grads1[key]), f"{name} vs 1 thread: grad {key}"


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("synapse", ["gemm", "event"])
def test_forward_is_lif_of_the_current_bit_for_bit(synapse, dtype, reset_delay, reset):
    # spk, mem and the pre-reset membrane are lif_forward's bits on the layer's current, every
    # element, whichever synapse made the current.
    t, b, f, n = 7, 9, 130, 160  # n >= 128 and 3% spikes: the event-driven synapse
    g = generator(3)
    if synapse == "event":
        x = (torch.rand(t, b, f, generator=g) < 0.03).to(dtype)
    else:
        x = torch.randn(t, b, f, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(n, f, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    bias = (torch.randn(n, generator=g, dtype=torch.float64) * 0.3 + 0.5).to(dtype)
    beta = (torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.5).to(dtype)
    assert torch.ops.snnkernels.event_driven(x.reshape(t * b, f)) == (synapse == "event")
    x2 = x.reshape(t * b, f)
    current = (torch.ops.snnkernels.spike_linear(x2, weight, bias) if synapse == "event"
               else torch.addmm(bias, x2, weight.t()))
    reset_id = snnkernels._args.check_reset(reset, reset_delay)
    params = (beta.expand(b, n).reshape(-1).contiguous(), torch.ones(1, dtype=dtype),
              torch.ones(1, dtype=dtype))
    consts = (0, 2.0, 0.0, reset_id, reset_delay)
    expected = torch.ops.snnkernels.lif_forward(current.view(t, b * n), None, *params, *consts)
    spk, mem, pre, _ = torch.ops.snnkernels.linear_lif_forward(x, weight, bias, *params, *consts,
                                                               0, 0, 0.0, False)
    assert 0.05 < expected[0].mean() < 0.95, "too few or too many spikes: a weak test"
    for name, got, want in zip(("spk", "mem", "pre"), (spk, mem, pre), expected):
        assert torch.equal(got, want), name


def test_opcheck_linear_ops():
    inputs = layer_inputs()
    x, w, b = (inputs[k].clone().requires_grad_() for k in ("x", "weight", "bias"))
    n = w.shape[0]
    beta = torch.full((n,), 0.8, dtype=torch.float64, requires_grad=True)
    one = torch.ones(1, dtype=torch.float64)
    sg = S.atan()
    for mask in ((0, 0, 0.0, False), (1, 3, 0.0, False), (1, 3, 0.0, True), (2, 0, 0.4, False)):
        torch.library.opcheck(torch.ops.snnkernels.linear_lif_forward.default,
                              (x, w, b, beta, one, one, sg.kind, *sg.constants(), 0, True, *mask))
    g = generator(3)
    rows, f = x.shape[0] * x.shape[1], x.shape[2]
    values = torch.randn(rows, 3, generator=g, dtype=torch.float64)
    indices = torch.stack([torch.randperm(n, generator=g)[:3].sort().values for _ in range(rows)])
    x2 = x.detach().reshape(rows, f)
    torch.library.opcheck(torch.ops.snnkernels.linear_sparse_backward.default,
                          (values, indices.int(), torch.empty(0, dtype=torch.int64), x2,
                           w.detach(), True, True, True))
    grad = torch.randn(rows, n, generator=g, dtype=torch.float64)
    for needs in ((True, True, True), (False, True, False)):
        for event in (None, torch.tensor([True]), torch.tensor([False])):
            torch.library.opcheck(torch.ops.snnkernels.linear_dense_backward.default,
                                  (grad, x2, w.detach(), *needs, event))
    # CSR (ActiveWindow's form), with empty rows, and only some outputs
    row_ptr = torch.arange(rows + 1, dtype=torch.int64) // 2 * 3
    nnz = int(row_ptr[-1])
    torch.library.opcheck(torch.ops.snnkernels.linear_sparse_backward.default,
                          (values.reshape(-1)[:nnz].contiguous(),
                           indices.reshape(-1)[:nnz].int().contiguous(), row_ptr, x2,
                           w.detach(), False, True, False))


def sparse_backward_args(rows=4, f=3, n=5):
    g = generator(8)
    values = torch.randn(rows, 2, generator=g, dtype=torch.float64)
    indices = torch.tensor([[0, 3], [1, 4], [2, 3], [0, 1]], dtype=torch.int32)
    return [values, indices, torch.empty(0, dtype=torch.int64),
            torch.randn(rows, f, generator=g, dtype=torch.float64),
            torch.randn(n, f, generator=g, dtype=torch.float64), True, True, True]


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__(1, a[1] + 4), r"indices must be in \[0, N = 5\)"),
    (lambda a: a.__setitem__(1, a[1] - 1), r"indices must be in \[0, N = 5\)"),
    (lambda a: (a.__setitem__(0, a[0][:3]), a.__setitem__(1, a[1][:3])), "ELL values must be"),
    (lambda a: a.__setitem__(4, a[4].float()), "values, x and weight must have the same dtype"),
    (lambda a: (a.__setitem__(0, a[0].reshape(-1)), a.__setitem__(1, a[1].reshape(-1)),
                a.__setitem__(2, torch.tensor([0, 2, 4, 6, 7]))),
     "row_ptr must start at 0 and end"),
    (lambda a: (a.__setitem__(0, a[0].reshape(-1)), a.__setitem__(1, a[1].reshape(-1)),
                a.__setitem__(2, torch.tensor([0, 0, 2, 4, 4, 6, 8, 8, 8])[::2])),
     "CSR needs int64 row_ptr"),
], ids=["index-too-large", "index-negative", "ell-rows", "dtype", "csr-end", "csr-strided"])
def test_sparse_synaptic_backward_checks_its_arguments(change, message):
    """The op's own checks (csrc/lif_checks.h, shared by the CPU and CUDA versions), for direct
    torch.ops callers: a clear error, never a read outside the inputs."""
    args = sparse_backward_args()
    change(args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.snnkernels.linear_sparse_backward(*args)


def test_sparse_synaptic_backward_with_no_entries():
    """ELL rows of k = 0 (no row_ptr) and a CSR with every row empty: all gradients zero."""
    args = sparse_backward_args()
    args[0], args[1] = args[0][:, :0], args[1][:, :0]
    for grads in (torch.ops.snnkernels.linear_sparse_backward(*args),
                  torch.ops.snnkernels.linear_sparse_backward(
                      args[0].reshape(-1), args[1].reshape(-1),
                      torch.zeros(5, dtype=torch.int64), *args[3:])):
        assert [tuple(t.shape) for t in grads] == [(4, 3), (5, 3), (5,)]
        assert all(torch.equal(t, torch.zeros_like(t)) for t in grads)


@pytest.mark.parametrize("f,n", [(0, 5), (3, 0)], ids=["no-features", "no-neurons"])
def test_sparse_synaptic_backward_with_an_empty_dimension(restore_num_threads, f, n):
    """F = 0 or N = 0 (no entries then): empty or zero gradients, on 1 and 2 threads."""
    args = sparse_backward_args(f=f, n=n)
    if n == 0:
        args[0], args[1] = args[0][:, :0], args[1][:, :0]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        dx, dw, db = torch.ops.snnkernels.linear_sparse_backward(*args)
        assert dx.shape == (4, f) and dw.shape == (n, f) and db.shape == (n,)
        assert torch.equal(dx, torch.zeros_like(dx)) and torch.equal(dw, torch.zeros_like(dw))
        expected_db = torch.zeros(n, dtype=db.dtype).index_add_(
            0, args[1].reshape(-1).long(), args[0].reshape(-1))
        assert_close(db, expected_db, GRAD_TOL[torch.float64], "db")


@pytest.mark.parametrize("csr", [False, True], ids=["ell", "csr"])
@pytest.mark.parametrize("f,n", [(64, 64), (380, 380)], ids=["one-column-block", "several"])
def test_sparse_synaptic_backward_sizes(restore_num_threads, f, n, csr):
    """grad_weight of one and of several column blocks equals the dense products (float64,
    GRAD_TOL) and gives the same bits on 1 and 2 threads."""
    rows, k = 50, 5
    g = generator(12)
    values = torch.randn(rows, k, generator=g, dtype=torch.float64)
    indices = torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(rows)])
    row_ptr = torch.empty(0, dtype=torch.int64)
    if csr:  # rows of 0 to k entries
        keep = torch.arange(k).expand(rows, k) < torch.randint(0, k + 1, (rows, 1), generator=g)
        values, indices = values[keep], indices[keep]
        row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)])
    x = torch.randn(rows, f, generator=g, dtype=torch.float64)
    w = torch.randn(n, f, generator=g, dtype=torch.float64)
    row_of = (torch.arange(rows).repeat_interleave(k) if not csr
              else torch.repeat_interleave(torch.arange(rows), row_ptr.diff()))
    dense = torch.zeros(rows, n, dtype=torch.float64)
    dense[row_of, indices.reshape(-1).long()] = values.reshape(-1)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(torch.ops.snnkernels.linear_sparse_backward(
            values, indices.int(), row_ptr, x, w, True, True, True))
    tol = GRAD_TOL[torch.float64]
    for got, want, name in zip(results[0], (dense @ w, dense.t() @ x, dense.sum(0)),
                               ("dx", "dW", "db")):
        assert_close(got, want, tol, name)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_dense_synaptic_backward_checks_shapes():
    g = generator(6)
    grad, x, w = (torch.randn(*shape, generator=g, dtype=torch.float64)
                  for shape in ((4, 5), (4, 3), (5, 3)))
    dx, dw, db = torch.ops.snnkernels.linear_dense_backward(grad, x, w, True, True, True)
    tol = GRAD_TOL[torch.float64]
    assert_close(dx, grad @ w, tol, "dx")
    assert_close(dw, grad.t() @ x, tol, "dW")
    assert_close(db, grad.sum(0), tol, "db")
    with pytest.raises(RuntimeError, match=r"needs grad \[R, N\], x \[R, F\], weight \[N, F\]"):
        torch.ops.snnkernels.linear_dense_backward(grad, x, w[:, :2], True, True, True)


def test_sparse_synaptic_backward_matches_dense_matmuls():
    g = generator(4)
    rows, f, n = 30, 7, 11
    x, w = torch.randn(rows, f, generator=g, dtype=torch.float64), torch.randn(n, f, generator=g, dtype=torch.float64)
    dense = torch.randn(rows, n, generator=g, dtype=torch.float64) * (torch.rand(rows, n, generator=g) < 0.3)
    keep = dense != 0
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)])
    cols = keep.nonzero()[:, 1].int()
    dx, dw, db = torch.ops.snnkernels.linear_sparse_backward(dense[keep], cols, row_ptr, x, w,
                                                             True, True, True)
    tol = GRAD_TOL[torch.float64]
    assert_close(dx, dense @ w, tol, "dx")
    assert_close(dw, dense.t() @ x, tol, "dW")
    assert_close(db, dense.sum(0), tol, "db")


X = torch.randn(4, 3, 5)  # [T, B, N]

BAD_SPECS = [
    # (id, callable building the spec, exception, text)
    ("k-zero", lambda: sp.TopK(k=0), ValueError, "k must be >= 1"),
    ("k-negative", lambda: sp.TopK(k=-2), ValueError, "k must be >= 1"),
    ("k-float", lambda: sp.TopK(k=2.5), TypeError, "k must be an int"),
    ("k-bool", lambda: sp.TopK(k=True), TypeError, "k must be an int"),
    ("fraction-zero", lambda: sp.TopK(fraction=0.0), ValueError, "fraction must be in (0, 1]"),
    ("fraction-above-1", lambda: sp.TopK(fraction=1.5), ValueError, "fraction must be in (0, 1]"),
    ("fraction-nan", lambda: sp.TopK(fraction=float("nan")), ValueError, "fraction must be in"),
    ("fraction-str", lambda: sp.TopK(fraction="0.1"), TypeError, "fraction must be a real"),
    ("both", lambda: sp.TopK(k=2, fraction=0.5), ValueError, "exactly one of k and fraction"),
    ("neither", lambda: sp.TopK(), ValueError, "exactly one of k and fraction"),
    ("temporal-int", lambda: sp.TopK(k=1, temporal=1), TypeError, "temporal must be a bool"),
    ("width-zero", lambda: sp.ActiveWindow(0.0), ValueError, "width must be > 0"),
    ("width-negative", lambda: sp.ActiveWindow(-0.1), ValueError, "width must be > 0"),
    ("width-nan", lambda: sp.ActiveWindow(float("nan")), ValueError, "width must be > 0"),
    ("width-tensor", lambda: sp.ActiveWindow(torch.tensor(0.2)), TypeError, "width must be a real"),
]


@pytest.mark.parametrize("build,exc,text", [pytest.param(*c[1:], id=c[0]) for c in BAD_SPECS])
def test_bad_spec(build, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build()


@pytest.mark.parametrize("fn", [snnkernels.lif, reference.lif], ids=["op", "reference"])
def test_bad_sparse_argument_of_lif(fn):
    with pytest.raises(ValueError, match="k = 6 is larger than the N = 5"):
        fn(X, 0.9, sparse=sp.TopK(k=6))
    for bad in ("topk", 0.05, sp.TopK, S.atan()):
        with pytest.raises(TypeError, match="sparse must be None"):
            fn(X, 0.9, sparse=bad)


@pytest.mark.parametrize("fn", [snnkernels.linear_lif, reference.linear_lif], ids=["op", "reference"])
def test_bad_linear_lif_arguments(fn):
    x = torch.randn(4, 3, 6)
    w = torch.randn(5, 6)
    cases = [
        (dict(weight=torch.randn(5, 7)), ValueError, r"weight has 7 input features"),
        (dict(weight=torch.randn(5)), ValueError, r"weight must be \[N, F\]"),
        (dict(weight=w.double()), TypeError, "weight has dtype torch.float64"),
        (dict(x=torch.randn(4, 6)), ValueError, r"x must be \[T, B, F\]"),
        (dict(bias=torch.randn(4)), ValueError, r"bias must have shape \[N\]"),
        (dict(beta=torch.rand(4)), ValueError, r"beta of shape \(4,\) does not broadcast to "
                                               r"the neuron shape \[B, N\] = \(3, 5\)"),
        (dict(sparse=sp.TopK(k=6)), ValueError, "k = 6 is larger than the N = 5"),
        (dict(sparse="window"), TypeError, "sparse must be None"),
    ]
    for overrides, exc, text in cases:
        kwargs = dict(x=x, weight=w, bias=None, beta=0.9)
        kwargs.update(overrides)
        sparse = kwargs.pop("sparse", None)
        with pytest.raises(exc, match=text):
            fn(kwargs.pop("x"), kwargs.pop("weight"), kwargs.pop("bias"), kwargs.pop("beta"),
               sparse=sparse)


@pytest.mark.parametrize("temporal", [False, True])
def test_k_equal_n_is_dense(temporal):
    """All entries kept: the same gradients as the dense layer (the sparse synaptic backward
    sums in another order than the GEMMs, hence a tolerance instead of identical bits)."""
    inputs = layer_inputs(n=17)
    _, _, dense = run_layer(snnkernels.linear_lif, inputs)
    _, _, full = run_layer(snnkernels.linear_lif, inputs, sparse=sp.TopK(k=17, temporal=temporal))
    for name in dense:
        assert_close(full[name], dense[name], GRAD_TOL[torch.float64], f"grad {name}")


@pytest.mark.parametrize("spec", [SPECS[1], SPECS[3], SPECS[4]])
def test_compile_fullgraph_matches_eager(spec):
    """The sparse layer traces into one graph (ActiveWindow's CSR has a data-dependent size:
    the fake implementation gives it an unbacked size) and gives the eager gradients."""
    torch._dynamo.reset()
    inputs = layer_inputs()

    def loss(x, weight, bias):
        spk, mem = snnkernels.linear_lif(x, weight, bias, 0.9, sparse=spec)
        return spk.sum() + mem.sum()

    grads = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        leaves = [inputs[k].clone().requires_grad_() for k in ("x", "weight", "bias")]
        grads.append(torch.autograd.grad(fn(*leaves), leaves))
    for name, a, b in zip(("x", "weight", "bias"), *grads):
        assert_close(a, b, GRAD_TOL[torch.float64], f"compiled grad {name}")
