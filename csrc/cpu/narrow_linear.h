// The synapse of a narrow layer (a classifier readout: N of 1 to 4 outputs) on the CPU, as loops
// over the rows of x instead of GEMMs, whose blocking has nothing to work on with N = 2. Used by
// linear_lif's forward and linear_dense_backward for layers of at most cpu::narrow_max_width()
// neurons (policy.h; narrow_linear_cpu.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "policy.h"

namespace snnkernels {

inline bool narrow_layer(const at::Tensor& x, int64_t neurons) {
  return x.is_cpu() && neurons <= cpu::narrow_max_width() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

// out [R, N] = x [R, F] W^T + bias: each output a sum over f in 16 interleaved lanes, the lanes
// added in order, then the bias.
at::Tensor narrow_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias);

// linear_dense_backward for the same layers: grad_x = grad W, grad_weight = grad^T x,
// grad_bias = column sums of grad, in one pass over the rows of x and grad. The weight and bias
// sums run over fixed blocks of rows (set by R alone), added in block order: the same bits for
// any thread count.
std::tuple<at::Tensor, at::Tensor, at::Tensor> narrow_linear_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, bool need_x,
    bool need_weight, bool need_bias);

}  // namespace snnkernels
