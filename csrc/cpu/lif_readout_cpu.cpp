// The op lif_backward_readout on the CPU (readout.h): its arguments checked, then the dense
// LIF backward (mask 0) or the masked one (compact), each forming the spikes' gradient from the
// readout's current gradient and weight.
#include <torch/library.h>

#include "readout.h"

namespace snnkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lif_backward_readout_cpu(const at::Tensor& readout_grad, const at::Tensor& readout_weight,
                         const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem,
                         const at::Tensor& pre_reset, const at::Tensor& beta,
                         const at::Tensor& threshold, const at::Tensor& graded,
                         int64_t surrogate, double p0, double p1, int64_t reset,
                         bool reset_delay, bool param_grads, int64_t mask, int64_t row,
                         int64_t k, double width, bool temporal) {
  TORCH_CHECK(mem.dim() == 2, "snnkernels: mem must be contiguous [T, M], got ", mem.sizes());
  const int64_t steps = mem.size(0), m = mem.size(1);
  TORCH_CHECK(readout_weight.dim() == 2 && readout_weight.is_contiguous() &&
                  readout_weight.size(0) >= 1 && readout_weight.size(1) >= 1 &&
                  m % readout_weight.size(1) == 0 &&
                  readout_weight.scalar_type() == mem.scalar_type(),
              "snnkernels: lif_backward_readout's readout_weight must be contiguous [C, H] of "
              "mem's dtype, C >= 1, H >= 1 dividing M = ", m, ", got ", readout_weight.sizes(),
              " ", readout_weight.scalar_type());
  const int64_t classes = readout_weight.size(0), rows = steps * (m / readout_weight.size(1));
  TORCH_CHECK(readout_grad.dim() == 2 && readout_grad.is_contiguous() &&
                  readout_grad.size(0) == rows && readout_grad.size(1) == classes &&
                  readout_grad.scalar_type() == mem.scalar_type(),
              "snnkernels: lif_backward_readout's readout_grad must be contiguous [T * B, C] = [",
              rows, ", ", classes, "] of mem's dtype, got ", readout_grad.sizes(), " ",
              readout_grad.scalar_type());
  if (mask != 0) {
    return cpu::lif_backward_masked_with_readout(readout_grad, readout_weight, grad_mem, mem,
                                                 pre_reset, beta, threshold, graded, surrogate,
                                                 p0, p1, reset, reset_delay, param_grads, mask,
                                                 row, k, width, temporal);
  }
  auto [grad_x, grad_beta, grad_thr, grad_graded] = cpu::lif_backward_with_readout(
      readout_grad, readout_weight, grad_mem, mem, pre_reset, beta, threshold, graded, surrogate,
      p0, p1, reset, reset_delay, param_grads);
  const auto opts = mem.options();
  return {grad_x, grad_beta, grad_thr, grad_graded, at::empty({0}, opts),
          at::empty({0}, opts.dtype(at::kInt)), at::empty({0}, opts.dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("lif_backward_readout", &lif_backward_readout_cpu);
}

}  // namespace snnkernels
