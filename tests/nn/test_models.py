"""snnkernels.models.TabularSNN: equals the same network written with snntorch.Leaky stepped
over time (logits and every parameter gradient, helpers.SNNTORCH_* tolerances); the rate
encoder is seeded and differentiable; dtype / batch-size changes; torch.compile(fullgraph=True)
(aot_eager and inductor) equals eager; it trains; bad arguments."""

from __future__ import annotations

import pytest
import snntorch
import snntorch.surrogate as sts
import torch
from torch import nn

from snnkernels import surrogate as S
from snnkernels.sparse import ActiveWindow, TopK
from snnkernels.models import SpikingLinear, TabularSNN

from helpers import GRAD_TOL, SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, assert_close

F, C, T, B = 6, 3, 5, 16


def data(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, F, generator=g, dtype=dtype) * 1.5 + 0.5


def model(**kwargs):
    """Weights scaled 4x from nn.Linear's init, so that every layer spikes (about 43%, 27%
    and 10% of neurons per step with data(); with the default init the output layer of this
    small net stays silent)."""
    torch.manual_seed(0)
    kwargs.setdefault("hidden", (12, 8))
    net = TabularSNN(F, num_classes=C, T=T, **kwargs)
    with torch.no_grad():
        for layer in list(net.layers) + [net.output]:
            layer.linear.weight.mul_(4)
    return net


def snntorch_logits(net: TabularSNN, x, spike_grad):
    """The same network stepped with snntorch.Leaky, sharing net's Linear layers."""
    layers = list(net.layers) + [net.output]
    leakies = [snntorch.Leaky(beta=l.beta, threshold=l.threshold, spike_grad=spike_grad,
                              reset_mechanism=l.reset_mechanism) for l in layers]
    mems = [lk.init_leaky() for lk in leakies]
    counts, out_mems = 0, []
    for _ in range(net.T):
        h = x  # direct encoding: the same input every step
        for i, (layer, lk) in enumerate(zip(layers, leakies)):
            h, mems[i] = lk(layer.linear(h), mems[i])
        counts = counts + h
        out_mems.append(mems[-1])
    return counts if net.readout == "spike_count" else torch.stack(out_mems).mean(0)


def logits_and_grads(net, fn, x):
    net.zero_grad()
    logits = fn(x)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    (logits * w).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("readout", ["spike_count", "membrane"])
@pytest.mark.parametrize("ours, theirs", [(S.atan(), sts.atan()),
                                          (S.fast_sigmoid(), sts.fast_sigmoid())],
                         ids=["atan", "fast_sigmoid"])
def test_matches_snntorch_network(ours, theirs, readout):
    net = model(surrogate=ours, readout=readout, beta=0.8, threshold=0.9)
    x = data()
    actual = logits_and_grads(net, net, x)
    expected = logits_and_grads(net, lambda x: snntorch_logits(net, x, theirs), x)
    assert expected[0].abs().sum() > 0
    assert_close(actual[0], expected[0], SNNTORCH_FORWARD_TOL, "logits")
    for name, g in expected[1].items():
        assert g.abs().sum() > 0, f"{name}: no gradient (choose other inputs)"
        assert_close(actual[1][name], g, SNNTORCH_GRAD_TOL, f"grad {name}")


def test_snntorch_surrogate_accepted():
    assert model(surrogate=sts.sigmoid(slope=4)).output.surrogate == S.sigmoid(slope=4)


def test_outputs_and_record():
    net = model()
    logits, spikes = net(data(), record=True)
    assert logits.shape == (B, C)
    assert [s.shape for s in spikes] == [(T, B, 12), (T, B, 8), (T, B, C)]
    assert torch.equal(logits, spikes[-1].sum(0))
    assert ((logits >= 0) & (logits <= T) & (logits == logits.round())).all()


def test_learnable_neurons_get_gradients():
    net = model(learn_beta=True, learn_threshold=True)
    net(data()).sum().backward()
    assert net.layers[0].beta.shape == (12,)
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_rate_encoder_is_seeded_and_differentiable():
    x = torch.rand(B, F, requires_grad=True)
    a, b = model(encoder="rate", seed=3), model(encoder="rate", seed=3)
    first = a(x)
    assert torch.equal(first, b(x)), "same seed, same stream"
    second = a(x)
    assert not torch.equal(first, second), "a fresh sample each call"
    a.reseed()
    assert torch.equal(a(x), first), "reseed restarts the stream"
    assert not torch.equal(model(encoder="rate", seed=4)(x), first)
    encoded = a._rate_encode(x)
    assert encoded.shape == (T, B, F) and set(encoded.unique().tolist()) <= {0.0, 1.0}
    (g,) = torch.autograd.grad(a(x, record=True)[1][0].sum(), x)
    assert g.abs().sum() > 0, "straight-through: gradient reaches the features"


@pytest.mark.parametrize("seed, exc, text", [
    ("a", TypeError, r"seed must be an int, got 'a'"),
    (True, TypeError, r"seed must be an int, got True"),
    (1.0, TypeError, r"seed must be an int, got 1.0"),
    (2**64, ValueError, r"seed must be in \[-2\*\*63, 2\*\*64\)"),
    (-(2**63) - 1, ValueError, r"seed must be in \[-2\*\*63, 2\*\*64\)"),
], ids=["str", "bool", "float", "too-large", "too-small"])
def test_bad_seed_is_refused_by_constructor_and_reseed(seed, exc, text):
    with pytest.raises(exc, match=r"TabularSNN: " + text):
        TabularSNN(F, encoder="rate", seed=seed)
    net = TabularSNN(F, encoder="rate", seed=5)
    with pytest.raises(exc, match=r"TabularSNN.reseed: " + text):
        net.reseed(seed)
    assert net.seed == 5


@pytest.mark.parametrize("seed", [-(2**63), 2**64 - 1])
def test_seed_range_ends_are_accepted(seed):
    """The ends of torch.Generator.manual_seed's range run (and reseed takes them too)."""
    x = torch.rand(2, F)
    net = TabularSNN(F, encoder="rate", seed=seed)
    first = net(x)
    net.reseed(seed)
    assert torch.equal(net(x), first)


def test_dtype_and_batch_size_changes_mid_use():
    net = model(readout="membrane")
    x = data()
    out32 = net(x)
    net.double()
    out64 = net(x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-5)
    assert net(x.double()[:3]).shape == (3, C)  # another batch size
    net.float()
    assert torch.equal(net(x), out32)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("readout", ["spike_count", "membrane"])
def test_compile_fullgraph(backend, readout):
    net = model(readout=readout, learn_beta=True)
    x = data()
    eager = logits_and_grads(net, net, x)
    compiled = logits_and_grads(net, torch.compile(net, backend=backend, fullgraph=True), x)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=1e-4, atol=1e-5)


def test_trains():
    """A few Adam steps on two separable blobs lower the loss and fit most of the data."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (128,), generator=g)
    x = torch.randn(128, F, generator=g) * 0.5 + (y[:, None] * 2.0 - 1.0)
    torch.manual_seed(0)
    net = TabularSNN(F, hidden=(32,), num_classes=2, T=6, readout="membrane")
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (net(x).argmax(1) == y).float().mean() > 0.9


def test_bad_arguments():
    with pytest.raises(TypeError, match="sparse"):
        TabularSNN(F, sparse="topk")
    with pytest.raises(ValueError, match="k"):
        TabularSNN(F, hidden=(4,), sparse=TopK(k=5))  # k larger than the layer
    for kwargs, match in [({"encoder": "latency"}, "encoder"), ({"readout": "max"}, "readout"),
                          ({"T": 0}, "T"), ({"hidden": (4, 0)}, r"hidden\[1\]")]:
        with pytest.raises(ValueError, match=match):
            TabularSNN(F, **kwargs)
    with pytest.raises(ValueError, match=r"\[batch, 6\]"):
        model()(torch.zeros(T, B, F))


@pytest.mark.parametrize("make", [lambda bad: TabularSNN(F, surrogate=bad),
                                  lambda bad: TabularSNN(F).dense_copy(surrogate=bad)],
                         ids=["constructor", "dense_copy"])
@pytest.mark.parametrize("bad", ["x", lambda z: z], ids=["str", "callable"])
def test_bad_surrogate_is_named_surrogate(make, bad):
    with pytest.raises(TypeError, match=r"^surrogate=.* is not supported") as info:
        make(bad)
    assert "spike_grad" not in str(info.value)


def spiking_linear(*widths, **overrides):
    kwargs = dict(beta=0.9, threshold=1.0, surrogate=None, reset_mechanism="subtract",
                  reset_delay=True)
    kwargs.update(overrides)
    return SpikingLinear(*widths, **kwargs)


@pytest.mark.parametrize("widths, exc, text", [
    ((-1, 3), ValueError, r"in_features must be >= 0, got -1"),
    ((2, -3), ValueError, r"out_features must be >= 0, got -3"),
    ((2.5, 3), TypeError, r"in_features must be an int, got 2.5"),
    ((2, True), TypeError, r"out_features must be an int, got True"),
], ids=["in-negative", "out-negative", "in-float", "out-bool"])
def test_spiking_linear_bad_width(widths, exc, text):
    with pytest.raises(exc, match=r"SpikingLinear: " + text):
        spiking_linear(*widths)


@pytest.mark.parametrize("name", ["beta", "threshold"])
@pytest.mark.parametrize("bad", ["x", "0.9", None, True, torch.ones(2)],
                         ids=["str", "numeric-str", "None", "bool", "two-elements"])
def test_spiking_linear_bad_learnable_parameter(name, bad):
    with pytest.raises(TypeError, match=rf"SpikingLinear: {name} must be a real number .*"
                                        rf"learn_{name}=True"):
        spiking_linear(2, 3, **{name: bad, f"learn_{name}": True})


def test_spiking_linear_learnable_parameter_from_a_number_or_one_element_tensor():
    layer = spiking_linear(2, 3, beta=torch.tensor(0.5), learn_beta=True, threshold=2,
                           learn_threshold=True)
    assert torch.equal(layer.beta, torch.full((3,), 0.5))
    assert torch.equal(layer.threshold, torch.full((3,), 2.0))


@pytest.mark.parametrize("sparse", [None, TopK(k=1)], ids=["dense-cpu", "sparse"])
@pytest.mark.parametrize("steps", [-1, 2.5, True, "3"])
def test_from_constant_checks_steps_on_every_path(sparse, steps):
    """The sparse layer takes the path CUDA takes (the fused LIF on the expanded current)."""
    layer = spiking_linear(2, 3, sparse=sparse)
    with pytest.raises(ValueError, match=r"steps must be an int >= 0"):
        layer.from_constant(torch.rand(4, 3), steps)


def params_grads(net, x, encoder_seed=None):
    net.zero_grad()
    if encoder_seed is not None:
        net.reseed(encoder_seed)
    logits = net(x)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    (logits * w).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("encoder", ["direct", "rate"])
def test_sparse_keep_all_equals_dense(encoder):
    """TopK keeping every neuron and an ActiveWindow wider than any |U - threshold| are the
    dense backward (float64: identical forward, grads within GRAD_TOL)."""
    x = data(dtype=torch.float64).abs() if encoder == "rate" else data(dtype=torch.float64)
    dense = model(encoder=encoder).double()
    ref_logits, ref_grads = params_grads(dense, x, 0)
    for spec in (TopK(fraction=1.0), ActiveWindow(width=1e6)):
        sparse = model(encoder=encoder, sparse=spec).double()
        logits, grads = params_grads(sparse, x, 0)
        assert torch.equal(logits, ref_logits)
        for name, r in ref_grads.items():
            assert_close(grads[name], r, GRAD_TOL[torch.float64], f"{spec} grad {name}")


def test_sparse_changes_hidden_gradients_only():
    """TopK(k=1) on the hidden layers: same forward, the output layer's weight gradient is the
    dense one (it stays dense), the hidden layers' differ."""
    x = data(dtype=torch.float64)
    dense, sparse = model().double(), model(sparse=TopK(k=1)).double()
    ref_logits, ref_grads = params_grads(dense, x)
    logits, grads = params_grads(sparse, x)
    assert torch.equal(logits, ref_logits)
    for name, r in ref_grads.items():
        if name.startswith("output."):
            assert_close(grads[name], r, GRAD_TOL[torch.float64], f"grad {name}")
        elif name.endswith("weight"):
            assert not torch.allclose(grads[name], r), name


def test_dense_copy():
    """dense_copy: same forward, no mask anywhere, the requested surrogate in every layer, the
    original untouched; its gradients equal a dense model's with the same weights."""
    x = data(dtype=torch.float64)
    sparse = model(sparse=TopK(k=2)).double()
    twin = sparse.dense_copy(surrogate=S.fast_sigmoid(slope=5))
    layers = list(twin.layers) + [twin.output]
    assert twin.sparse is None and all(l.sparse is None for l in layers)
    assert all(l.surrogate == S.fast_sigmoid(slope=5) for l in layers)
    assert all(l.sparse == TopK(k=2) for l in sparse.layers)
    dense = model(surrogate=S.fast_sigmoid(slope=5)).double()
    ref_logits, ref_grads = params_grads(dense, x)
    logits, grads = params_grads(twin, x)
    assert torch.equal(logits, ref_logits)
    for name, r in ref_grads.items():
        assert_close(grads[name], r, GRAD_TOL[torch.float64], f"grad {name}")
    assert sparse.dense_copy().layers[0].surrogate == sparse.layers[0].surrogate
