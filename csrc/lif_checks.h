// Argument checks shared by the CPU and CUDA implementations. The Python wrapper validates
// user-facing arguments first; these guard the op boundary for direct torch.ops callers.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <limits>

#include "debug_poison.h"

namespace snnkernels {

inline at::ScalarType accumulation_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_param(const at::Tensor& p, const char* name, const at::Tensor& x, int64_t m) {
  TORCH_CHECK(p.dim() == 1 && p.numel() >= 1 && (m == 0 || m % p.numel() == 0), "snnkernels: ",
              name, " must be 1-D with a number of elements dividing ", m, ", got shape ",
              p.sizes());
  TORCH_CHECK(p.is_contiguous(), "snnkernels: ", name, " must be contiguous");
  TORCH_CHECK(p.device() == x.device(), "snnkernels: ", name, " is on ", p.device(),
              " but x is on ", x.device());
  TORCH_CHECK(p.scalar_type() == accumulation_dtype(x.scalar_type()), "snnkernels: ", name,
              " must have dtype ", accumulation_dtype(x.scalar_type()), ", got ", p.scalar_type());
}

inline void check_time_major(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.is_contiguous(), "snnkernels: ", name,
              " must be contiguous with shape ", like.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device() == like.device(),
              "snnkernels: ", name, " must match x in dtype and device");
}

inline void check_state(const c10::optional<at::Tensor>& mem0, const at::Tensor& x) {
  if (!mem0.has_value()) return;
  TORCH_CHECK(mem0->dim() == 1 && mem0->numel() == x.size(1) && mem0->is_contiguous(),
              "snnkernels: mem0 must be contiguous with shape [", x.size(1), "], got ",
              mem0->sizes());
  TORCH_CHECK(mem0->scalar_type() == x.scalar_type() && mem0->device() == x.device(),
              "snnkernels: mem0 must match x in dtype and device");
}

// Upstream gradient: full [T, M], or one element broadcast to [T, M].
inline void check_grad(const c10::optional<at::Tensor>& g, const char* name, const at::Tensor& mem) {
  if (!g.has_value()) return;
  if (g->numel() == 1 && mem.numel() != 1) {
    TORCH_CHECK(g->scalar_type() == mem.scalar_type() && g->device() == mem.device(),
                "snnkernels: ", name, " must match mem in dtype and device");
    return;
  }
  check_time_major(*g, name, mem);
}

// The arguments every LIF backward shares (dense or masked, CPU or CUDA); mem is [T, M].
inline void check_backward_args(const c10::optional<at::Tensor>& grad_spk,
                                const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem,
                                const at::Tensor& pre_reset,
                                const c10::optional<at::Tensor>& mem0, const at::Tensor& beta,
                                const at::Tensor& threshold, const at::Tensor& graded,
                                bool reset_delay) {
  const int64_t m = mem.size(1);
  if (!reset_delay) check_time_major(pre_reset, "pre_reset", mem);
  check_grad(grad_spk, "grad_spk", mem);
  check_grad(grad_mem, "grad_mem", mem);
  check_state(mem0, mem);
  check_param(beta, "beta", mem, m);
  check_param(threshold, "threshold", mem, m);
  check_param(graded, "graded", mem, m);
}

// CPU outputs of 32 MiB or more always come from fresh mmap'd pages (glibc never keeps blocks
// above its 32 MiB mmap threshold), and faulting them in one by one from the kernel's first
// writes cost as much as the kernel itself (N=4096 forward: 51k faults, 64% of its time).
// MADV_POPULATE_WRITE maps the range in one call per thread, without a trap per page: measured
// here, N=4096 forward 74 -> 60 ms, forward+backward 133 -> 115 ms. Smaller outputs are often
// recycled heap memory, where it measured slower, so they are left alone.
inline void prefault(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  constexpr int64_t kMinBytes = int64_t(32) << 20, kBlock = int64_t(2) << 20;
  const int64_t bytes = t.nbytes();
  if (!t.is_cpu() || bytes < kMinBytes) return;
  const uintptr_t page = 4096;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data_ptr()) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data_ptr()) + bytes) & ~(page - 1);
  const int64_t blocks = (static_cast<int64_t>(end - begin) + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    const uintptr_t lo = begin + b0 * kBlock;
    const uintptr_t hi = std::min<uintptr_t>(end, begin + b1 * kBlock);
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);  // a hint: errors ignored
  });
#else
  (void)t;
#endif
}

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  if (debug_poison_enabled()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  prefault(out);
  return out;
}

}  // namespace snnkernels
