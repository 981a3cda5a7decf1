// Argument checks shared by the CPU and CUDA implementations. The Python wrapper validates
// user-facing arguments first; these guard the op boundary for direct torch.ops callers.
#pragma once

#include <ATen/ATen.h>

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

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  if (debug_poison_enabled()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

}  // namespace snnkernels
