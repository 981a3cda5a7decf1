"""The cache of the CPU kernels' outputs of 1 MiB or more.

glibc gives every CPU buffer of 32 MiB or more fresh pages from the kernel and returns them on
free, and smaller freed blocks at the top of its heap go back too once enough is free, so an
output can cost a page fault and a zeroing per page on every call (at T=25, B=256, N=4096 that
was half of the LIF forward). snnkernels' CPU kernels therefore take their outputs of 1 MiB or
more from a cache: a freed output buffer is kept and handed to the next output of the same size
(rounded up to 64 KiB), as torch's CUDA allocator does on the GPU. The cache holds at most
`limit` bytes of free buffers (default 1 GiB; the environment variable SNNKERNELS_CPU_CACHE_MB
sets it at import; 0 turns caching off, and outputs then come from torch's allocator). Memory
in use by live tensors is not counted and never capped.
"""

from __future__ import annotations

import torch

from . import _extension  # noqa: F401  (loads the ops)

MAX_MEGABYTES = (2**63 - 1) >> 20
"""The largest cap set_limit takes, in MiB (2^43 - 1): the op takes the cap in bytes as an
int64."""


def info() -> dict:
    """The cache's state in this process.

    Returns:
        {'cached_bytes', 'limit_bytes', 'hits', 'misses'}, ints: free buffers held now, the
            cap on them, and how many large outputs were served from the cache or from new
            memory.
    """
    cached, limit, hits, misses = torch.ops.snnkernels.cpu_cache_info()
    return {"cached_bytes": cached, "limit_bytes": limit, "hits": hits, "misses": misses}


def set_limit(megabytes: int) -> None:
    """Caps the free buffers the cache keeps at `megabytes` MiB (0: keep none), freeing what is
    above the new cap now.

    Args:
        megabytes: the cap in MiB, a Python int from 0 to MAX_MEGABYTES = 2^43 - 1 (the most
            whose byte count fits an int64), not a bool.

    Raises:
        TypeError: megabytes not an int.
        ValueError: megabytes < 0 or > MAX_MEGABYTES.
    """
    if isinstance(megabytes, bool) or not isinstance(megabytes, int):
        raise TypeError(f"megabytes must be an int, got {type(megabytes).__name__}")
    if megabytes < 0:
        raise ValueError(f"megabytes must be >= 0, got {megabytes}")
    if megabytes > MAX_MEGABYTES:
        raise ValueError(f"megabytes must be at most {MAX_MEGABYTES} (2**43 - 1: the cap in "
                         f"bytes is an int64), got {megabytes}")
    torch.ops.snnkernels.cpu_cache_set_limit(megabytes << 20)


def release() -> None:
    """Frees every cached buffer (live tensors are untouched); the cap stays."""
    torch.ops.snnkernels.cpu_cache_release()


# Reads SNNKERNELS_CPU_CACHE_MB now, so a bad value fails at import rather than inside a kernel.
info()
