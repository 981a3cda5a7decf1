// A cache of CPU output buffers of 1 MiB or more, reused across calls.
//
// glibc hands out blocks of 32 MiB or more as fresh mmap'd pages and unmaps them on free, so
// every large output of every call is faulted in and zeroed by the kernel again: at T=25, B=256,
// N=4096 the forward spent as long zeroing its two fresh 105 MB outputs as computing them.
// Smaller blocks come from the heap, but freed ones at its top go back to the system once more
// than its trim threshold is free, so whether a call of a few MiB refaults its outputs depends on
// the heap's layout (measured, [25, 65536] float32 forward: 0.7 ms in one process, 3.9 ms in
// another). The kernels' CPU outputs of 1 MiB or more therefore come from this pool: a freed
// buffer is kept (up to a cap) and handed to the next output of the same rounded size, as torch's
// CUDA allocator does on the GPU. Buffers of 2 MiB or more get transparent huge pages where the
// system allows it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace snnkernels {

// Outputs of at least this many bytes come from the pool.
constexpr int64_t kPoolMinBytes = int64_t(1) << 20;

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
