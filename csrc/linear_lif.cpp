// Device-generic ops built from other ops: lif_forward_masked (lif_forward with the mask
// arguments, for autograd), linear_lif_forward (one GEMM for all T, or on the CPU the
// event-driven spike_linear when x is mostly zeros, or the narrow-layer loops for a layer of a
// few neurons; then the LIF) and its dense synaptic backward linear_dense_backward (GEMMs, or
// spike_weight_grad when x is mostly zeros, or the narrow-layer loops).
// Registered for CPU and CUDA. The LIF is reached through the dispatcher, so the per-device
// lif_forward runs. The masked backward and the sparse synaptic backward have
// their own kernels (cpu/lif_cpu.cpp, cpu/linear_sparse_cpu.cpp,
// cuda/lif_masked_cuda.cu, cuda/linear_sparse_cuda.cu); a build without CUDA registers a clear
// error for them on CUDA.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "cpu/narrow_linear.h"
#include "cpu/spike_linear.h"
#include "lif_checks.h"

namespace snnkernels {
namespace {

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Triple call_lif_forward(const at::Tensor& x, const c10::optional<at::Tensor>& mem0,
                        const at::Tensor& beta, const at::Tensor& threshold,
                        const at::Tensor& graded, int64_t surrogate, double p0, double p1,
                        int64_t reset, bool reset_delay) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("snnkernels::lif_forward", "")
                       .typed<Triple(const at::Tensor&, const c10::optional<at::Tensor>&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     int64_t, double, double, int64_t, bool)>();
  return op.call(x, mem0, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay);
}

at::Tensor call_spike_linear(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("snnkernels::spike_linear", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const c10::optional<at::Tensor>&)>();
  return op.call(x, weight, bias);
}

std::tuple<at::Tensor, at::Tensor> call_spike_weight_grad(const at::Tensor& grad,
                                                          const at::Tensor& x, bool need_bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("snnkernels::spike_weight_grad", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                 const at::Tensor&, bool)>();
  return op.call(grad, x, need_bias);
}

Triple lif_forward_masked(const at::Tensor& x, const c10::optional<at::Tensor>& mem0,
                          const at::Tensor& beta, const at::Tensor& threshold,
                          const at::Tensor& graded, int64_t surrogate, double p0, double p1,
                          int64_t reset, bool reset_delay, int64_t /*mask*/, int64_t /*row*/,
                          int64_t /*k*/, double /*width*/, bool /*temporal*/) {
  return call_lif_forward(x, mem0, beta, threshold, graded, surrogate, p0, p1, reset,
                          reset_delay);
}

using Quad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The synapse's path as linear_lif_forward's `event` output: [1] bool on the CPU (true: event-
// driven), [0] elsewhere (no choice to carry).
at::Tensor event_flag(bool event, const at::Tensor& x) {
  const auto opts = x.options().dtype(at::kBool);
  return x.is_cpu() ? at::full({1}, event, opts) : at::empty({0}, opts);
}

void check_linear_shapes(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 3, "snnkernels: linear_lif x must be [T, B, F], got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(2),
              "snnkernels: linear_lif weight must be [N, F = ", x.size(2), "], got ",
              weight.sizes());
}

// x [T, B, F] W^T + bias as [T * B, N] (shapes checked by the caller), and whether it ran
// event-driven.
std::tuple<at::Tensor, bool> synaptic_current(const at::Tensor& x, const at::Tensor& weight,
                                              const c10::optional<at::Tensor>& bias) {
  const int64_t rows = x.size(0) * x.size(1), n = weight.size(0);
  const at::Tensor x2 = x.reshape({rows, x.size(2)});
  if (event_driven_layer(x2, n)) {  // spikes: work over the nonzeros of x only
    return {call_spike_linear(x2, weight.contiguous(), bias), true};
  }
  if (narrow_layer(x2, n)) return {narrow_linear_cpu(x2, weight.contiguous(), bias), false};
  // On the CPU from the output cache (empty_output.h): torch's allocator handed back fresh pages
  // for this layer-sized intermediate, and addmm's bias copy then faulted them in.
  at::Tensor current = empty_output({rows, n}, x.options());
  if (bias.has_value()) {
    at::addmm_out(current, *bias, x2, weight.t());
  } else {
    at::mm_out(current, x2, weight.t());
  }
  return {current, false};
}

Quad linear_lif_forward(const at::Tensor& x, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias, const at::Tensor& beta,
                        const at::Tensor& threshold, const at::Tensor& graded, int64_t surrogate,
                        double p0, double p1, int64_t reset, bool reset_delay,
                        int64_t /*mask*/, int64_t /*k*/, double /*width*/, bool /*temporal*/) {
  check_linear_shapes(x, weight);
  const int64_t steps = x.size(0), batch = x.size(1), n = weight.size(0);
  const auto [current, event] = synaptic_current(x, weight, bias);
  const at::Tensor rows = current.view({steps, batch * n});
  auto [spk, mem, pre] = call_lif_forward(rows, c10::nullopt, beta, threshold, graded, surrogate,
                                          p0, p1, reset, reset_delay);
  return {spk, mem, pre, event_flag(event, x)};
}

// The forward's choice when given (its `event` output: counting x's nonzeros again was a
// visible share of a small training step's backward), else the rule on x.
bool event_driven_path(const c10::optional<at::Tensor>& event, const at::Tensor& x, int64_t n) {
  if (!event.has_value() || event->numel() == 0) return event_driven_layer(x, n);
  TORCH_CHECK(event->numel() == 1 && event->scalar_type() == at::kBool && event->is_cpu() &&
                  x.is_cpu(),
              "snnkernels: linear_dense_backward's event must be linear_lif_forward's [1] bool on "
              "the CPU, got ", event->sizes(), " ", event->scalar_type(), " on ", event->device());
  return event->item<bool>();
}

// The GEMMs write into outputs from empty_output (on the CPU the output cache), like the
// forward's current: with torch's allocator these layer-sized gradients came on fresh pages.
Triple linear_dense_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                             bool need_x, bool need_weight, bool need_bias,
                             const c10::optional<at::Tensor>& event) {
  TORCH_CHECK(grad.dim() == 2 && x.dim() == 2 && weight.dim() == 2 &&
                  grad.size(0) == x.size(0) && grad.size(1) == weight.size(0) &&
                  x.size(1) == weight.size(1),
              "snnkernels: linear_dense_backward needs grad [R, N], x [R, F], weight [N, F], got ",
              grad.sizes(), ", ", x.sizes(), ", ", weight.sizes());
  const int64_t rows = x.size(0), f = x.size(1), n = weight.size(0);
  if (narrow_layer(x, n)) {
    return narrow_linear_backward_cpu(grad.contiguous(), x.contiguous(), weight.contiguous(),
                                      need_x, need_weight, need_bias);
  }
  const auto opts = x.options();
  at::Tensor grad_x = empty_output({need_x ? rows : 0, f}, opts);
  if (need_x) at::mm_out(grad_x, grad, weight);
  if (need_weight && event_driven_path(event, x, n)) {  // CPU: dW (and db) over x's nonzeros
    const auto [grad_weight, grad_bias] =
        call_spike_weight_grad(grad.contiguous(), x.contiguous(), need_bias);
    return {grad_x, grad_weight, grad_bias};
  }
  at::Tensor grad_weight = empty_output({need_weight ? n : 0, f}, opts);
  at::Tensor grad_bias = empty_output({need_bias ? n : 0}, opts);
  if (need_weight) at::mm_out(grad_weight, grad.t(), x);
  if (need_bias) at::sum_out(grad_bias, grad, 0);
  return {grad_x, grad_weight, grad_bias};
}

#ifndef SNNKERNELS_WITH_CUDA
void cpu_only(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "snnkernels: ", op.schema().name(),
                              " (sparse linear_lif / masked LIF backward) on CUDA needs a build "
                              "with CUDA (this one is CPU-only); use sparse=None on CUDA");
}
#endif

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("lif_forward_masked", &lif_forward_masked);
  m.impl("linear_lif_forward", &linear_lif_forward);
  m.impl("linear_dense_backward", &linear_dense_backward);
}

TORCH_LIBRARY_IMPL(snnkernels, CUDA, m) {
  m.impl("lif_forward_masked", &lif_forward_masked);
  m.impl("linear_lif_forward", &linear_lif_forward);
  m.impl("linear_dense_backward", &linear_dense_backward);
#ifndef SNNKERNELS_WITH_CUDA  // with CUDA: registered by cuda/lif_masked_cuda.cu and
                              // cuda/linear_sparse_cuda.cu
  m.impl("lif_backward_masked", torch::CppFunction::makeFromBoxedFunction<&cpu_only>());
  m.impl("linear_sparse_backward", torch::CppFunction::makeFromBoxedFunction<&cpu_only>());
#endif
}

}  // namespace snnkernels
