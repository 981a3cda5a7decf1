"""Shared fixtures: the device x dtype grid and the debug-poison switch.

Modelled on rusty1s/pytorch_scatter's tests, which parametrize every test over devices x dtypes.
Here the dtypes depend on the device (CPU: float32/float64; CUDA: float32/float16/bfloat16), so
`device` and `dtype` are generated together by `pytest_generate_tests`:

- a test that takes `device` and `dtype` runs on every supported (device, dtype) pair;
- a test that takes only `device` runs once per device.

CUDA parameters are always generated and skip with a reason when there is no GPU or when the
extension was built without CUDA, so the test ids are the same on every machine.
"""

from __future__ import annotations

import sys

import pytest
import torch

import snnkernels

_lif_module = sys.modules["snnkernels.lif"]  # the module (snnkernels.lif is the function)


def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if not snnkernels.build_info()["cuda"]:
        return "snnkernels was built without CUDA (build_info()['cuda'] is False)"
    return None


CUDA_SKIP = _cuda_skip_reason()


def _union(required, declared):
    return tuple(dict.fromkeys(required + tuple(declared)))


# The dtypes the issue requires, plus any more that snnkernels.lif declares it supports.
DTYPES_BY_DEVICE = {
    "cpu": _union((torch.float32, torch.float64), _lif_module.CPU_DTYPES),
    "cuda": _union((torch.float32, torch.float16, torch.bfloat16), _lif_module.CUDA_DTYPES),
}


def _device_param(device: str, *values):
    marks = [pytest.mark.skip(reason=CUDA_SKIP)] if device == "cuda" and CUDA_SKIP else []
    ident = "-".join([device] + [str(v).replace("torch.", "") for v in values])
    return pytest.param(torch.device(device), *values, marks=marks, id=ident)


DEVICE_PARAMS = [_device_param(d) for d in DTYPES_BY_DEVICE]
DEVICE_DTYPE_PARAMS = [_device_param(d, t) for d, ts in DTYPES_BY_DEVICE.items() for t in ts]


def pytest_generate_tests(metafunc):
    names = metafunc.fixturenames
    if "device" in names and "dtype" in names:
        metafunc.parametrize(("device", "dtype"), DEVICE_DTYPE_PARAMS)
    elif "device" in names:
        metafunc.parametrize("device", DEVICE_PARAMS)


@pytest.fixture(autouse=True)
def debug_poison():
    """Kernels fill their outputs with NaN before writing them, so an element a kernel forgets
    to write shows up as NaN (and fails the comparison) instead of as stale memory."""
    torch.ops.snnkernels.set_debug_poison(True)
    yield
    torch.ops.snnkernels.set_debug_poison(False)


@pytest.fixture
def restore_num_threads():
    """Tests that change torch's thread count get it back afterwards."""
    saved = torch.get_num_threads()
    yield saved
    torch.set_num_threads(saved)
