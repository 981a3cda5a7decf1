"""Builds snnkernels._C: CPU kernels always, CUDA kernels when a CUDA toolkit and a CUDA build
of torch are present. SNNKERNELS_CUDA=1 forces the CUDA build (and fails loudly without a
toolkit), SNNKERNELS_CUDA=0 forces CPU only. Build with `pip install --no-build-isolation .`
so the extension is compiled against the torch you already have."""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
# -ffp-contract=off: no fused multiply-add, so the kernels round exactly as the reference does
# (the AVX2/AVX-512 clones in csrc/cpu could otherwise contract a*b+c).
CPU_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"]
NVCC_FLAGS = ["-O3", "--fmad=false", "-lineinfo"]  # fmad off: same rounding as the CPU math


def want_cuda() -> bool:
    forced = os.environ.get("SNNKERNELS_CUDA")
    if forced is not None and forced not in ("0", "1"):
        raise SystemExit(f"SNNKERNELS_CUDA must be 0 or 1, got {forced!r}")
    available = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if forced == "1" and not available:
        raise SystemExit(
            "SNNKERNELS_CUDA=1 but no CUDA build is possible: "
            f"CUDA_HOME={cpp_extension.CUDA_HOME}, torch.version.cuda={torch.version.cuda}"
        )
    return available if forced is None else forced == "1"


def cuda_arch_list() -> str:
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs:
        archs = "8.0;9.0"
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return archs


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    defines = [
        ("SNNKERNELS_PYTHON_MODULE", None),
        ("SNNKERNELS_TORCH_VERSION", f'"{torch.__version__}"'),
    ]
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        defines += [("SNNKERNELS_WITH_CUDA", None), ("SNNKERNELS_CUDA_ARCHS", f'"{cuda_arch_list()}"')]
        return cpp_extension.CUDAExtension(
            "snnkernels._C",
            sources,
            define_macros=defines,
            extra_compile_args={"cxx": CPU_FLAGS, "nvcc": NVCC_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "snnkernels._C",
        sources,
        define_macros=defines,
        extra_compile_args={"cxx": CPU_FLAGS},
        extra_link_args=["-fopenmp"],
    )


# `snnkernels study` (the study CLI): data, attacks, statistics, figures, progress.
STUDY = ["scikit-learn", "adversarial-robustness-toolbox>=1.17", "scipy", "statsmodels", "pandas",
         "pyarrow", "matplotlib", "tqdm"]

setup(
    name="snnkernels",
    version="0.1.0",
    description="Fused CPU/CUDA kernels for spiking neural networks, snnTorch-compatible",
    packages=find_packages(include=["snnkernels", "snnkernels.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "study": STUDY,
        "test": ["pytest", "hypothesis", "snntorch==1.0.0"] + STUDY,
        "bench": ["pytest-benchmark"],
        # `snnkernels study --ray`: cells as Ray tasks (imported only with --ray)
        "ray": ["ray>=2.9"],
        # the API reference (mkdocs.yml; `mkdocs build --strict` runs in scripts/test.sh)
        "docs": ["mkdocs", "mkdocs-material", "mkdocstrings[python]"],
    },
    entry_points={"console_scripts": ["snnkernels=snnkernels.cli:main"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
