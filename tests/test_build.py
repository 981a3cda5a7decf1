"""What the extension reports about its build, and the ops it registers."""

from __future__ import annotations

import json

import torch

import snnkernels


def test_build_info_keys_and_types():
    info = snnkernels.build_info()
    assert set(info) == {"torch", "cuda", "cuda_archs", "openmp", "event_max_density",
                         "event_min_width", "narrow_max_width", "avx512"}
    assert all(isinstance(info[k], bool) for k in ("cuda", "openmp", "avx512"))
    assert set(info["event_max_density"]) == {"float32", "float64"}
    assert all(0.0 <= d <= 1.0 for d in info["event_max_density"].values())
    assert isinstance(info["event_min_width"], int) and info["event_min_width"] >= 1
    assert isinstance(info["narrow_max_width"], int) and info["narrow_max_width"] >= 1
    assert isinstance(info["torch"], str) and isinstance(info["cuda_archs"], str)
    assert info == json.loads(torch.ops.snnkernels.build_info())


def test_build_matches_this_torch():
    """The extension is compiled against the torch it runs with (ABI)."""
    assert snnkernels.build_info()["torch"] == torch.__version__


def test_cuda_flag_matches_this_machine():
    """A CPU build of torch cannot have produced a CUDA build of snnkernels (this machine: torch
    CPU, so cuda False and no archs); a CUDA build lists the architectures it compiled for."""
    info = snnkernels.build_info()
    if torch.version.cuda is None:
        assert info["cuda"] is False and info["cuda_archs"] == ""
    if info["cuda"]:
        assert info["cuda_archs"] != ""


def test_openmp_enabled():
    """Without OpenMP, at::parallel_for runs serially (CPU kernel notes): the thread-count
    determinism tests would then test nothing, and the kernels would use one core."""
    assert snnkernels.build_info()["openmp"] is True


def test_ops_registered():
    for name in ("lif_forward", "lif_backward", "build_info", "set_debug_poison",
                 "lif_forward_masked", "lif_backward_masked", "linear_lif_forward",
                 "linear_sparse_backward", "linear_dense_backward", "spike_linear", "spike_weight_grad", "event_driven",
                 "cpu_cache_info", "cpu_cache_set_limit", "cpu_cache_release",
                 "lif_constant_forward", "lif_constant_backward"):
        assert hasattr(torch.ops.snnkernels, name), name
    assert snnkernels.__all__ == ["lif", "lif_constant", "linear_lif", "reference", "sparse",
                                  "surrogate", "build_info", "cpu_cache"]
