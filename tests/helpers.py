"""Shared test helpers: input generation, one forward+backward run, and the comparisons (with
the tolerances every test file uses, stated once here)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch

import snnkernels
from snnkernels import reference
from snnkernels import surrogate as S

RESETS = ("subtract", "zero", "none")
RESET_DELAYS = (True, False)

# All 7 factories with their defaults, plus non-default parameters for every factory that has
# parameters (so a kernel that ignored p0 / p1 would fail).
SURROGATES = [
    pytest.param(S.atan(), id="atan"),
    pytest.param(S.atan(alpha=0.7), id="atan-alpha0.7"),
    pytest.param(S.fast_sigmoid(), id="fast_sigmoid"),
    pytest.param(S.fast_sigmoid(slope=3), id="fast_sigmoid-slope3"),
    pytest.param(S.sigmoid(), id="sigmoid"),
    pytest.param(S.sigmoid(slope=4), id="sigmoid-slope4"),
    pytest.param(S.spike_rate_escape(), id="spike_rate_escape"),
    pytest.param(S.spike_rate_escape(beta=2, slope=5), id="spike_rate_escape-beta2-slope5"),
    pytest.param(S.triangular(), id="triangular"),
    pytest.param(S.triangular(threshold=0.4), id="triangular-threshold0.4"),
    pytest.param(S.straight_through_estimator(), id="straight_through_estimator"),
    pytest.param(S.heaviside(), id="heaviside"),
]

NEURON_ARGS = ("beta", "threshold", "graded_spikes_factor", "mem0")


# --------------------------------------------------------------------------------------------
# Parameter modes: how beta / threshold / graded_spikes_factor / mem0 are given.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamMode:
    """layout: "float"       beta/threshold/graded are Python floats, mem0 is None;
    "0dim"        all four are 0-dim tensors;
    "per_neuron"  all four are [N] (the last dim of x);
    "per_element" all four are x.shape[1:] (e.g. [B, N]);
    "mixed"       beta [1, N] (leading ones), threshold [B, 1] (broadcast over N),
                  graded 0-dim, mem0 [B, 1].
    learnable: the tensors (and mem0) require grad."""

    layout: str
    learnable: bool

    @property
    def id(self) -> str:
        return self.layout + ("-learn" if self.learnable else "-fixed" if self.layout != "float" else "")

    def shapes(self, batch: tuple) -> dict:
        n = batch[-1:]
        lead_ones = (1,) * (len(batch) - 1)
        if self.layout == "0dim":
            return dict.fromkeys(NEURON_ARGS, ())
        if self.layout == "per_neuron":
            return dict.fromkeys(NEURON_ARGS, n)
        if self.layout == "per_element":
            return dict.fromkeys(NEURON_ARGS, batch)
        if self.layout == "mixed":
            col = batch[:-1] + (1,)
            return {"beta": lead_ones + n, "threshold": col, "graded_spikes_factor": (),
                    "mem0": col}
        raise ValueError(self.layout)


PARAM_MODES = [pytest.param(ParamMode("float", False), id="float")] + [
    pytest.param(ParamMode(layout, learn), id=ParamMode(layout, learn).id)
    for layout in ("0dim", "per_neuron", "per_element", "mixed")
    for learn in (True, False)
]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One set of LIF inputs. Tensors are leaves; x always requires grad."""

    x: torch.Tensor
    beta: object
    threshold: object = 1.0
    mem0: Optional[torch.Tensor] = None
    graded_spikes_factor: object = 1.0

    def leaves(self) -> dict:
        """name -> tensor for every input that requires grad."""
        return {k: v for k, v in self.args().items()
                if isinstance(v, torch.Tensor) and v.requires_grad}

    def args(self) -> dict:
        return {"x": self.x, "beta": self.beta, "threshold": self.threshold, "mem0": self.mem0,
                "graded_spikes_factor": self.graded_spikes_factor}

    def fresh(self, dtype: Optional[torch.dtype] = None, device=None) -> "Case":
        """Independent leaf copies (optionally cast / moved), so two runs never share .grad."""

        def copy(v):
            if not isinstance(v, torch.Tensor):
                return v
            # empty_strided + copy_ keeps the strides of non-contiguous (even non-dense) inputs
            c = torch.empty_strided(v.size(), v.stride(), dtype=dtype or v.dtype,
                                    device=device or v.device)
            return c.copy_(v.detach()).requires_grad_(v.requires_grad)

        return Case(**{k: copy(v) for k, v in self.args().items()})


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_case(shape, mode: ParamMode, dtype=torch.float64, device="cpu", seed=0,
              x_scale=0.8, x_shift=0.45) -> Case:
    """Random inputs in a regime where a good share of neurons spike and fall back below the
    threshold: beta in [0.3, 0.95], threshold in [0.6, 1.4], graded in [0.5, 1.5],
    mem0 ~ N(0, 0.5), x ~ N(x_shift, x_scale). Generated in float64 on the CPU from `seed`
    (so the same seed gives the same values on every device), then cast and moved."""
    g = generator(seed)
    batch = tuple(shape[1:])

    def uniform(s, lo, hi):
        return torch.rand(s, generator=g, dtype=torch.float64) * (hi - lo) + lo

    ranges = {"beta": (0.3, 0.95), "threshold": (0.6, 1.4), "graded_spikes_factor": (0.5, 1.5)}
    x = torch.randn(shape, generator=g, dtype=torch.float64) * x_scale + x_shift
    if mode.layout == "float":
        values = {k: float(uniform((), *r)) for k, r in ranges.items()}
        values["mem0"] = None
    else:
        shapes = mode.shapes(batch)
        values = {k: uniform(shapes[k], *r) for k, r in ranges.items()}
        values["mem0"] = torch.randn(shapes["mem0"], generator=g, dtype=torch.float64) * 0.5

    def place(v, grad):
        if not isinstance(v, torch.Tensor):
            return v
        return v.to(dtype=dtype, device=device).requires_grad_(grad)

    return Case(x=place(x, True),
                **{k: place(v, mode.learnable) for k, v in values.items()})


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

# Upstream gradients. Each maps (spk, mem, w_spk, w_mem) to a scalar loss.
UPSTREAMS: dict[str, Callable] = {
    # random weights on both outputs: the general case
    "weighted_both": lambda s, m, ws, wm: (s * ws).sum() + (m * wm).sum(),
    # one output unused: autograd hands the op zeros (or None at the op level) for the other
    "spk_only": lambda s, m, ws, wm: (s * ws).sum(),
    "mem_only": lambda s, m, ws, wm: (m * wm).sum(),
    # a broadcast (stride-0) upstream gradient, passed to the kernel as one value
    "spk_sum": lambda s, m, ws, wm: s.sum(),
    "both_sum": lambda s, m, ws, wm: s.sum() + 0.5 * m.sum(),
    # a gradient broadcast over time only (stride 0 in dim 0, not in the others)
    "time_broadcast": lambda s, m, ws, wm: (m * wm[0]).sum() + (s * ws[0]).sum(),
}


@dataclass
class Result:
    spk: torch.Tensor
    mem: torch.Tensor
    grads: dict  # input name -> gradient tensor (only inputs that require grad)

    def items(self):
        yield "spk", self.spk
        yield "mem", self.mem
        for k, v in self.grads.items():
            yield f"grad {k}", v


def upstream_weights(shape, dtype, device, seed):
    g = generator(seed + 1000)
    ws = torch.randn(shape, generator=g, dtype=torch.float64)
    wm = torch.randn(shape, generator=g, dtype=torch.float64)
    return ws.to(dtype=dtype, device=device), wm.to(dtype=dtype, device=device)


def run_lif(fn, case: Case, *, upstream="weighted_both", seed=0, backward=True, **kwargs) -> Result:
    """Runs fn (snnkernels.lif or snnkernels.reference.lif) on fresh copies of the case's
    inputs, then the backward of UPSTREAMS[upstream]; returns outputs and input gradients."""
    case = case.fresh()
    args = case.args()
    spk, mem = fn(args.pop("x"), args.pop("beta"), args.pop("threshold"), args.pop("mem0"),
                  graded_spikes_factor=args.pop("graded_spikes_factor"), **kwargs)
    leaves = case.leaves()
    grads = {}
    if backward and leaves:
        ws, wm = upstream_weights(spk.shape, spk.dtype, spk.device, seed)
        loss = UPSTREAMS[upstream](spk, mem, ws, wm)
        values = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads = dict(zip(leaves, values))
        # An input that does not influence the loss gets None from autograd; the comparison
        # wants a tensor of zeros (what the op's backward returns).
        grads = {k: torch.zeros_like(leaves[k]) if v is None else v for k, v in grads.items()}
    return Result(spk.detach(), mem.detach(), grads)


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tol:
    """Relative error |a - b| / max(|b|, floor * max|b|) <= rtol, element by element.
    The floor (a fraction of the largest expected magnitude in the tensor) keeps elements that
    are zero or nearly cancel from demanding more digits than the tensor's scale carries: e.g.
    floor 0.1 means elements below 10% of the largest are held to rtol * 0.1 * max|b| absolute.
    rtol = 0 means bit-identical."""

    rtol: float
    floor: float = 0.0


# Forward vs the reference (same dtype): both follow the same float operations in the same
# order (docs/semantics.md), so float64 must be bit-identical. float32 spikes must be identical too
# (a spike that flips is a relative error of 1); float32 membrane: relative error <= 1e-6.
FORWARD_TOL = {torch.float64: Tol(0.0), torch.float32: Tol(1e-6, 1e-6)}
# Gradients vs the reference (same dtype). The kernel's backward is hand-written BPTT and does
# the arithmetic in another order than autograd, and terms like (1 - thr * sigma') cancel, so
# gradients are not bit-identical. float64: relative error <= 1e-10 with a floor of 1e-6 of the
# tensor's largest magnitude (measured: <= 1e-12). float32: relative error <= 1e-5 with a floor
# of 0.1 of the largest magnitude, i.e. |a - b| <= 1e-5 |b| + 1e-6 max|b| (measured: about
# 2.5e-7 max|b| in the worst, exploding-gradient cases). For the gradient of a broadcast input
# (a parameter, mem0) "largest magnitude" is that of the summed terms: see summand_scale.
GRAD_TOL = {torch.float64: Tol(1e-10, 1e-6), torch.float32: Tol(1e-5, 0.1)}
# The op vs snnTorch in float32 (different code, same formulas): the same float32 gradient
# tolerance; spikes identical and membrane <= 1e-6 relative as above.
SNNTORCH_FORWARD_TOL = FORWARD_TOL[torch.float32]
SNNTORCH_GRAD_TOL = GRAD_TOL[torch.float32]


def rel_err(actual: torch.Tensor, expected: torch.Tensor, floor: float,
            scale: Optional[float] = None) -> torch.Tensor:
    a, b = actual.double(), expected.double()
    if scale is None:
        scale = b.abs().max().item() if b.numel() else 0.0
    denom = b.abs().clamp_min(floor * scale).clamp_min(1e-300)
    return (a - b).abs() / denom


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: Tol, what: str,
                 equal_nan: bool = False, scale: Optional[float] = None) -> None:
    """actual vs expected under tol (see Tol); same shape, dtype and device required. NaN must
    appear in the same places when equal_nan, and nowhere otherwise. `scale` replaces max|b| as
    the magnitude the floor is a fraction of (see summand_scale)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.device == expected.device, f"{what}: device {actual.device} != {expected.device}"
    a, b = actual.detach().cpu(), expected.detach().cpu()
    nan_a, nan_b = a.isnan(), b.isnan()
    if equal_nan:
        assert torch.equal(nan_a, nan_b), f"{what}: NaN at different places"
        a, b = a[~nan_b], b[~nan_b]
    else:
        assert not nan_a.any(), f"{what}: {int(nan_a.sum())} NaN in the result (unwritten output?)"
        assert not nan_b.any(), f"{what}: NaN in the expected value: the test inputs are bad"
    if tol.rtol == 0.0:
        if not torch.equal(a, b):
            diff = (a != b).nonzero()[0].tolist()
            raise AssertionError(
                f"{what}: not bit-identical; {int((a != b).sum())} of {a.numel()} elements "
                f"differ, first at {diff}: {a[tuple(diff)].item()!r} != {b[tuple(diff)].item()!r}")
        return
    err = rel_err(a, b, tol.floor, scale)
    if err.numel() and err.max() > tol.rtol:
        i = int(err.argmax())
        scale_text = "max|expected|" if scale is None else f"scale {scale:.3g}"
        raise AssertionError(
            f"{what}: relative error {err.max().item():.3g} > {tol.rtol:g} (floor {tol.floor:g} "
            f"x {scale_text}) at flat index {i}: {a.reshape(-1)[i].item()!r} vs expected "
            f"{b.reshape(-1)[i].item()!r}; max|expected| = {b.abs().max().item():.3g}")


def assert_same_bits(actual: Result, expected: Result, what: str = "") -> None:
    assert_results_match(actual, expected, Tol(0.0), Tol(0.0), what, equal_nan=True)


def assert_results_match(actual: Result, expected: Result, forward_tol: Tol, grad_tol: Tol,
                         what: str = "", equal_nan: bool = False) -> None:
    """Spikes bit-identical (they are 0 or g: a flip is a relative error of 1, so every forward
    tolerance used here implies identity), membrane at forward_tol, gradients at grad_tol."""
    assert set(actual.grads) == set(expected.grads), (
        f"{what}: gradients for {sorted(actual.grads)} vs {sorted(expected.grads)}")
    for (name, a), (_, b) in zip(actual.items(), expected.items()):
        tol = Tol(0.0) if name == "spk" else grad_tol if name.startswith("grad") else forward_tol
        scale = summand_scale(name.removeprefix("grad "), b, expected) if name.startswith("grad") else None
        assert_close(a, b, tol, f"{what} {name}".strip(), equal_nan=equal_nan, scale=scale)


def summand_scale(name: str, grad: torch.Tensor, expected: Result) -> Optional[float]:
    """The gradient of a parameter (or of mem0) is a sum over the K = x.numel() / numel neuron-
    steps that use each of its entries, and those terms can cancel (a scalar threshold's
    gradient can be 100x smaller than its terms). The floor of its relative error is then taken
    relative to K * max|dL/dx| (a bound on the magnitude of what was summed), not to the sum."""
    gx = expected.grads.get("x")
    if name == "x" or gx is None or grad.numel() == 0 or gx.numel() == 0:
        return None
    k = gx.numel() // grad.numel()
    gx = gx[~gx.isnan()]
    return max(grad.abs().max().item(), k * gx.abs().max().item()) if gx.numel() else None


def assert_spiking_regime(spk: torch.Tensor) -> None:
    """Guards the inputs, not the op: a comparison is only meaningful when a good share of
    neurons spike and some of them fall back below the threshold (not all-zero spikes)."""
    fired = spk != 0
    rate = fired.double().mean().item()
    assert 0.05 <= rate <= 0.95, f"test inputs give spike rate {rate:.2f}: choose other inputs"
    if spk.shape[0] >= 2:
        falls_back = (fired[:-1] & ~fired[1:]).any().item()
        assert falls_back, "no neuron stops firing after a spike: choose other inputs"


# --------------------------------------------------------------------------------------------
# Half precision (CUDA float16 / bfloat16): compared with the float32 reference run on the
# upcast inputs, with a looser tolerance. The kernel stores membranes (what the backward reads)
# and takes upstream gradients in the half type; a gradient summed over neurons (a 0-dim
# threshold, mem0, graded factor) can nearly cancel, so its error is measured against a tenth of
# the scale of its terms (summand_scale), as in the float32 tolerance. Run on an H200 (first
# gpu_check, 2026-11-26): without that floor, 10 of the 1,588 half-type cases failed on cancelling 0-dim
# sums (errors 0.1 to 5.3 relative to the sum), reproduced on the CPU by rounding the saved
# membranes and upstream gradients of the float32 kernels to the half type; with it, none.
# --------------------------------------------------------------------------------------------

LOWP_MIN_MATCHING_NEURONS = 0.95   # share of neurons whose whole spike train must match
LOWP_FORWARD_RTOL = {torch.float16: 1.6e-2, torch.bfloat16: 1.25e-1}  # 16 eps of the dtype
LOWP_GRAD_NORM_RTOL = {torch.float16: 5e-2, torch.bfloat16: 2.5e-1}   # ||a-b|| / ||b||


def assert_lowp_matches_float32(actual: Result, expected: Result, dtype, what: str = "") -> None:
    """actual: the op in float16/bfloat16; expected: the float32 reference on the upcast inputs.
    A half-rounded membrane can legitimately flip a spike that sits within rounding of the
    threshold, and a flip changes that neuron's whole future; so: at least 95% of neurons must
    have identical spike trains, and on those neurons (and on every parameter-gradient entry
    that only they feed) membrane and gradients must be close."""
    assert actual.spk.shape == expected.spk.shape and actual.mem.shape == expected.mem.shape
    if actual.spk.numel() == 0:
        for name, b in expected.grads.items():
            assert actual.grads[name].shape == b.shape, f"{what} grad {name}: shape"
            assert not actual.grads[name].isnan().any() and not actual.grads[name].any()
        return
    # which neurons fire when (graded spike values are rounded to the dtype: compared below)
    mismatch = ((actual.spk != 0) != (expected.spk != 0)).any(dim=0)
    share = 1.0 - mismatch.double().mean().item()
    assert share >= LOWP_MIN_MATCHING_NEURONS, f"{what}: only {share:.1%} of spike trains match"
    ok = ~mismatch
    equal_nan = bool(expected.mem.isnan().any())  # only from NaN input
    assert_close(actual.spk.float()[:, ok], expected.spk[:, ok],
                 Tol(LOWP_FORWARD_RTOL[dtype], 0.1), f"{what} spk")
    assert_close(actual.mem.float()[:, ok], expected.mem[:, ok],
                 Tol(LOWP_FORWARD_RTOL[dtype], 0.1), f"{what} mem", equal_nan=equal_nan)
    for name, b in expected.grads.items():
        a = actual.grads[name].float()
        if name == "x":
            sel = ok.expand(a.shape)
        else:
            # an entry of a broadcast input sums over neurons: keep those fed by no mismatch
            sel = (mismatch.double().sum_to_size(b.shape) == 0).expand(b.shape)
        a_sel, b_sel = a[sel], b[sel]
        if equal_nan:
            assert torch.equal(a_sel.isnan(), b_sel.isnan()), f"{what} grad {name}: NaN places"
            a_sel, b_sel = a_sel[~b_sel.isnan()], b_sel[~b_sel.isnan()]
        else:
            assert not a_sel.isnan().any(), f"{what} grad {name}: NaN"
        if b_sel.numel() == 0:
            continue
        # a parameter's terms can cancel: relative to at least a tenth of their scale (as the
        # float32 tolerance's floor, see summand_scale)
        scale = summand_scale(name, b, expected) or 0.0
        denom = max(b_sel.norm().item(), 0.1 * scale * b_sel.numel() ** 0.5, 1e-30)
        err = (a_sel - b_sel).norm().item() / denom
        assert err <= LOWP_GRAD_NORM_RTOL[dtype], f"{what} grad {name}: norm-relative error {err:.3g}"


def check_against_reference(case: Case, dtype, what: str = "", regime: bool = True,
                            **kwargs) -> tuple:
    """The op vs the reference on the same inputs (FORWARD_TOL / GRAD_TOL); for half types, vs
    the float32 reference on the upcast inputs. regime: also assert that the inputs make a good
    share of neurons spike (off for tiny shapes). Returns (actual, expected)."""
    actual = run_lif(snnkernels.lif, case, **kwargs)
    if dtype in FORWARD_TOL:
        expected = run_lif(reference.lif, case, **kwargs)
    else:
        expected = run_lif(reference.lif, case.fresh(dtype=torch.float32), **kwargs)
    if regime:
        assert_spiking_regime(expected.spk)
    if dtype in FORWARD_TOL:
        assert_results_match(actual, expected, FORWARD_TOL[dtype], GRAD_TOL[dtype], what,
                             equal_nan=bool(case.x.isnan().any()))  # NaN only from NaN input
    else:
        assert_lowp_matches_float32(actual, expected, dtype, what)
    assert "x" in actual.grads, f"{what}: x got no gradient"
    if regime:
        assert any(g.abs().sum() > 0 for g in actual.grads.values()), f"{what}: all gradients zero"
    return actual, expected


def run_portable(tmp_path, module: str, expression: str):
    """The value of `expression` (after `from {module} import *`, a test module in a subject
    folder of this tests directory) computed in a subprocess with SNNKERNELS_PORTABLE=1, where
    the CPU kernels take their portable paths instead of the AVX-512 ones (csrc/cpu/simd.h)."""
    here = os.path.dirname(__file__)
    folders = [here] + [os.path.join(here, d) for d in sorted(os.listdir(here))
                        if os.path.isfile(os.path.join(here, d, module + ".py"))]
    script = tmp_path / "run_portable.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path[:0] = {folders!r}\n"
        "import snnkernels\n"
        f"from {module} import *\n"
        f"torch.save({expression}, sys.argv[1])\n")
    saved = tmp_path / "portable.pt"
    env = dict(os.environ, SNNKERNELS_PORTABLE="1")
    subprocess.run([sys.executable, str(script), str(saved)], env=env, check=True)
    return torch.load(saved)
