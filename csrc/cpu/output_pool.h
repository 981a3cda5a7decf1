// The CPU output cache: a freed output buffer is kept (up to a cap) and handed to the next output
// of the same rounded size, as torch's CUDA allocator does on the GPU. glibc returns large blocks
// to the system on free, so without it every large output is faulted in and zeroed again on
// every call, which can cost as long as computing it (benchmarks/results/tuning.md). Buffers of
// 2 MiB or more get transparent huge pages where the system allows it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace snnkernels {

// Whether a CPU output of this many bytes comes from the pool (cpu::pool_min_bytes, policy.h).
bool pool_takes(int64_t bytes);

// An uninitialized CPU tensor whose storage comes from the pool (from at::empty when the pool's
// limit is 0).
at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

struct PoolStats {
  int64_t cached_bytes;  // free buffers held for reuse
  int64_t limit_bytes;   // the cap on cached_bytes (0: the pool keeps nothing)
  int64_t hits;          // allocations served from the cache
  int64_t misses;        // allocations that mapped new memory
};

PoolStats pool_stats();
void pool_set_limit(int64_t bytes);  // also frees cached buffers above the new cap
void pool_release();                 // frees every cached buffer

}  // namespace snnkernels
