"""What the extension reports about its build, and the ops it registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import snnkernels


def test_build_info_keys_and_types():
    info = snnkernels.build_info()
    assert set(info) == {"torch", "cuda", "cuda_archs", "openmp", "event_max_density",
                         "event_min_width", "narrow_max_width", "avx512", "cpu_policy"}
    assert all(isinstance(v, int) and v >= 0 for v in info["cpu_policy"].values())
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
                                  "surrogate", "build_info", "cpu_cache", "mechanism"]


# Every CPU tuning threshold's environment variable (csrc/cpu/policy.h): a value that is not a
# number in range fails at import with an error naming the variable and the value.
POLICY_ENV = ["SNNKERNELS_EVENT_MAX_DENSITY", "SNNKERNELS_EVENT_MIN_WIDTH",
              "SNNKERNELS_NARROW_MAX_WIDTH", "SNNKERNELS_CHUNK_NEURONS",
              "SNNKERNELS_MASKED_CHUNK_NEURONS", "SNNKERNELS_CONSTANT_TASK_BYTES",
              "SNNKERNELS_WEIGHT_GRAD_PARTS",
              "SNNKERNELS_TOPK_BLOCK_RATIO", "SNNKERNELS_CPU_CACHE_MIN_BYTES"]


def _import_with(env_name, value, code="import snnkernels"):
    env = dict(os.environ, **{env_name: value})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name, value", [(name, "abc") for name in POLICY_ENV]
                         + [("SNNKERNELS_EVENT_MAX_DENSITY", "1.5"),
                            ("SNNKERNELS_CHUNK_NEURONS", "-3"),
                            ("SNNKERNELS_WEIGHT_GRAD_PARTS", "2.5"),
                            ("SNNKERNELS_EVENT_MIN_WIDTH", "12x")])
def test_bad_policy_environment_fails_at_import(name, value):
    run = _import_with(name, value)
    assert run.returncode != 0
    assert name in run.stderr and value in run.stderr


@pytest.mark.parametrize("name, value, key", [
    ("SNNKERNELS_EVENT_MIN_WIDTH", "7", lambda info: info["event_min_width"]),
    ("SNNKERNELS_NARROW_MAX_WIDTH", "0", lambda info: info["narrow_max_width"]),
    ("SNNKERNELS_EVENT_MAX_DENSITY", "0.5", lambda info: info["event_max_density"]["float64"]),
    ("SNNKERNELS_CHUNK_NEURONS", "4096", lambda info: info["cpu_policy"]["chunk_neurons"]),
])
def test_policy_environment_overrides_the_default(name, value, key):
    run = _import_with(name, value, "import json, snnkernels; "
                                    "print(json.dumps(snnkernels.build_info()))")
    assert run.returncode == 0, run.stderr
    assert key(json.loads(run.stdout)) == float(value)
    assert key(snnkernels.build_info()) != float(value), "the override equals the default"


def test_narrow_width_above_the_loops_is_rejected():
    run = _import_with("SNNKERNELS_NARROW_MAX_WIDTH", "5")
    assert run.returncode != 0 and "SNNKERNELS_NARROW_MAX_WIDTH" in run.stderr
