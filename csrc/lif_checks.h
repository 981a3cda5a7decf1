// Argument checks shared by the CPU and CUDA implementations. The Python wrapper validates
// user-facing arguments first; these guard the op boundary for direct torch.ops callers.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "empty_output.h"
#include "lif_math.h"

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

// A linear layer's bias of N outputs for x: None, or contiguous [N] of x's dtype.
inline void check_bias(const c10::optional<at::Tensor>& bias, int64_t n, const at::Tensor& x) {
  TORCH_CHECK(!bias.has_value() ||
                  (bias->dim() == 1 && bias->numel() == n && bias->is_contiguous() &&
                   bias->scalar_type() == x.scalar_type()),
              "snnkernels: bias must be contiguous [N = ", n, "] of x's dtype");
}

// A CPU upstream gradient [T, M] that is one row broadcast over the steps (strides (0, 1), as
// spk.sum(0) gives): the CPU kernels read it in place (cpu::grad_rows, row step 0) instead of a
// [T, M] copy.
inline bool broadcast_over_steps(const at::Tensor& g, const at::Tensor& mem) {
  return g.is_cpu() && g.dim() == 2 && g.sizes() == mem.sizes() && g.size(0) > 1 &&
         g.stride(0) == 0 && (g.size(1) <= 1 || g.stride(1) == 1);
}

// Upstream gradient: full [T, M], one element broadcast to [T, M], or (CPU) one row broadcast
// over the T steps.
inline void check_grad(const c10::optional<at::Tensor>& g, const char* name,
                       const at::Tensor& mem) {
  if (!g.has_value()) return;
  if ((g->numel() == 1 && mem.numel() != 1) || broadcast_over_steps(*g, mem)) {
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

// The mask arguments of lif_backward_masked (schema in ops.cpp) for M neurons in all.
inline Mask check_mask_args(int64_t mask, int64_t row, int64_t k, double width, int64_t m) {
  const auto kind = static_cast<Mask>(mask);
  TORCH_CHECK(kind == Mask::TopK || kind == Mask::ActiveWindow,
              "snnkernels: mask must be 1 (TopK) or 2 (ActiveWindow), got ", mask);
  TORCH_CHECK(row >= 1 && m % row == 0, "snnkernels: row (neurons per row) must divide M = ", m,
              ", got ", row);
  // Neurons within a row are indexed with int32 (the selection, ELL and CSR indices).
  TORCH_CHECK(row <= (int64_t(1) << 31), "snnkernels: row (neurons per row) must be at most 2^31 "
              "(int32 indices within a row), got ", row);
  TORCH_CHECK(kind != Mask::TopK || (k >= 1 && k <= row),
              "snnkernels: TopK k must be in [1, row = ", row, "], got ", k);
  TORCH_CHECK(kind != Mask::ActiveWindow || width > 0,
              "snnkernels: ActiveWindow width must be > 0, got ", width);
  return kind;
}

// What every LIF backward returns besides grad_x: dL/dmem0 [M] and, when param_grads, per-neuron
// partial sums [M] for beta, threshold and graded (in `acc`, reduced to P elements afterwards).
struct NeuronGrads {
  at::Tensor mem0, beta, threshold, graded;

  NeuronGrads(int64_t m, const at::TensorOptions& options, const at::TensorOptions& acc,
              bool param_grads)
      : mem0(empty_output({m}, options)),
        beta(empty_output({param_grads ? m : 0}, acc)),
        threshold(empty_output({param_grads ? m : 0}, acc)),
        graded(empty_output({param_grads ? m : 0}, acc)) {}

  // No steps or no neurons: dL/dmem0 is zero and each parameter gradient is zeros of the
  // parameter's own shape (nothing to reduce).
  void set_empty_result(bool param_grads, const at::Tensor& beta_in,
                        const at::Tensor& threshold_in, const at::Tensor& graded_in) {
    mem0.zero_();
    if (!param_grads) return;
    beta = at::zeros_like(beta_in);
    threshold = at::zeros_like(threshold_in);
    graded = at::zeros_like(graded_in);
  }

  // The per-neuron sums reduced to each parameter's P elements by the device's deterministic
  // `reduce(partial, P)`; nothing to do without parameter gradients.
  template <typename Reduce>
  void reduce_params(bool param_grads, Reduce reduce, const at::Tensor& beta_in,
                     const at::Tensor& threshold_in, const at::Tensor& graded_in) {
    if (!param_grads) return;
    beta = reduce(beta, beta_in.numel());
    threshold = reduce(threshold, threshold_in.numel());
    graded = reduce(graded, graded_in.numel());
  }
};

// linear_sparse_backward's arguments (schema in ops.cpp), on either device, after the device has
// checked x itself (2-D, contiguous, a dtype it takes): weight [N, F], values / indices / row_ptr
// in x's dtype / int32 / int64 on x's device, ELL (values [R, k], row_ptr empty) or CSR (1-D
// values, row_ptr [R + 1] from 0 to nnz), and every index in [0, N). The few numbers the value
// checks read come to the host in one copy (on CUDA each copy waits for the queued work).
// Returns k for ELL (which may be 0), 0 for CSR; CSR is a non-empty row_ptr.
inline int64_t check_sparse_backward_args(const at::Tensor& values, const at::Tensor& indices,
                                          const at::Tensor& row_ptr, const at::Tensor& x,
                                          const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.size(1) == x.size(1),
              "snnkernels: weight must be contiguous [N, F = ", x.size(1), "], got ",
              weight.sizes());
  TORCH_CHECK(values.scalar_type() == x.scalar_type() && weight.scalar_type() == x.scalar_type(),
              "snnkernels: values, x and weight must have the same dtype");
  TORCH_CHECK(indices.scalar_type() == at::kInt && indices.sizes() == values.sizes() &&
                  values.is_contiguous() && indices.is_contiguous(),
              "snnkernels: indices must be contiguous int32 with the shape of values");
  const bool csr = row_ptr.numel() != 0;
  for (const at::Tensor* t : {&values, &indices, &row_ptr, &weight}) {
    if (t == &row_ptr && !csr) continue;  // ELL: row_ptr is unused
    TORCH_CHECK(t->device() == x.device(), "snnkernels: values, indices, row_ptr and weight must "
                "be on x's device ", x.device(), ", got ", t->device());
  }
  const int64_t num_rows = x.size(0), n = weight.size(0), nnz = values.numel();
  TORCH_CHECK(num_rows < (int64_t(1) << 31), "snnkernels: at most 2^31 - 1 rows (T * B)");
  std::vector<at::Tensor> probes;
  if (csr) {
    TORCH_CHECK(row_ptr.scalar_type() == at::kLong && row_ptr.dim() == 1 &&
                    row_ptr.numel() == num_rows + 1 && values.dim() == 1 &&
                    row_ptr.is_contiguous(),
                "snnkernels: CSR needs int64 row_ptr [R + 1 = ", num_rows + 1,
                "] and 1-D values");
    probes = {row_ptr[0], row_ptr[num_rows]};
  } else {
    TORCH_CHECK(values.dim() == 2 && values.size(0) == num_rows,
                "snnkernels: ELL values must be [R = ", num_rows, ", k], got ", values.sizes());
  }
  if (nnz != 0) {
    const auto [lo, hi] = at::aminmax(indices);
    probes.push_back(lo.to(at::kLong));
    probes.push_back(hi.to(at::kLong));
  }
  if (!probes.empty()) {
    const at::Tensor host = at::stack(probes).cpu();
    const int64_t* v = host.data_ptr<int64_t>();
    if (csr) {
      TORCH_CHECK(v[0] == 0 && v[1] == nnz,
                  "snnkernels: row_ptr must start at 0 and end at nnz = ", nnz);
      v += 2;
    }
    if (nnz != 0) {
      TORCH_CHECK(v[0] >= 0 && v[1] < n, "snnkernels: indices must be in [0, N = ", n, ")");
    }
  }
  return csr ? 0 : values.size(1);
}

}  // namespace snnkernels
