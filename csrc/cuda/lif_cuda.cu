// Fused multi-step LIF forward and surrogate-gradient backward on CUDA.
//
// Layout: time-major [T, M]. One thread per neuron walks time in registers; at every step the
// threads of a warp touch 32 consecutive elements of one row, so each load and store is
// coalesced. The per-step arithmetic is lif_math.h's, shared with the CPU kernels. float16 and
// bfloat16 are loaded, computed in float32 and rounded only when stored: the membrane carried
// from step to step stays float32, so the backward, which recomputes the reset and the surrogate
// from the stored (rounded) membranes, can disagree with the forward about a neuron lying within
// one rounding step of the threshold (float32 and float64 are exact).
//
// Saved for backward (by the Python autograd, see snnkernels/_ops.py): with reset_delay=True only
// the returned membrane `mem` (one value, 4 bytes per element in float32; no extra memory when
// the caller keeps `mem`); with reset_delay=False also the pre-reset membrane (8 bytes per
// element in float32), since the same-step reset is not invertible (reset to zero forgets it).
//
// Parameter gradients: each thread sums its neuron's terms over time into per-neuron buffers [M]
// (no atomics); column_sums then reduces them to the P parameter elements in a fixed order (see
// there), so the bits are the same on every run and every launch configuration.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "lif_cuda_common.cuh"

namespace snnkernels {
namespace {

using namespace gpu;

// Time steps whose loads a thread issues together before the dependent arithmetic: with one
// thread per neuron, one load in flight per thread is too little to cover DRAM latency.
constexpr int kBatch = 4;

template <typename T, typename A, Reset R, bool kDelay>
__global__ void __launch_bounds__(kThreads)
    lif_forward_kernel(const T* __restrict__ x, const T* __restrict__ mem0, Params<A> params,
                       T* __restrict__ spk, T* __restrict__ mem, T* __restrict__ pre,
                       int64_t steps, int64_t m) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n >= m) return;
  const A beta_c = clamp01(params.beta.at(n));
  const A thr = params.threshold.at(n);
  const A graded = params.graded.at(n);
  A u = mem0 != nullptr ? static_cast<A>(mem0[n]) : A(0);
  for (int64_t t0 = 0; t0 < steps; t0 += kBatch) {
    const int64_t len = std::min<int64_t>(kBatch, steps - t0);
    A xs[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) xs[k] = static_cast<A>(x[(t0 + k) * m + n]);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) {
        const int64_t off = (t0 + k) * m + n;
        A s, u_next;
        const A h = lif_step<R, kDelay>(xs[k], u, beta_c, thr, graded, &s, &u_next);
        spk[off] = static_cast<T>(s);
        mem[off] = static_cast<T>(u_next);
        if constexpr (!kDelay) pre[off] = static_cast<T>(h);
        u = u_next;
      }
    }
  }
}

template <typename T, typename A, Surrogate S, Reset R, bool kDelay>
__global__ void __launch_bounds__(kThreads)
    lif_backward_kernel(GradRows<T> grad_spk, GradRows<T> grad_mem, const T* __restrict__ mem,
                        const T* __restrict__ pre, const T* __restrict__ mem0, Params<A> params,
                        A p0, A p1, T* __restrict__ grad_x, T* __restrict__ grad_mem0,
                        A* __restrict__ grad_beta, A* __restrict__ grad_thr,
                        A* __restrict__ grad_graded, int64_t steps, int64_t m) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n >= m) return;
  const A beta_raw = params.beta.at(n);
  const A beta_c = clamp01(beta_raw);
  const A thr = params.threshold.at(n);
  const A graded = params.graded.at(n);
  const A first_prev = mem0 != nullptr ? static_cast<A>(mem0[n]) : A(0);
  A carry = A(0), d_beta = A(0), d_thr = A(0), d_graded = A(0);
  // u: the membrane step t returned, which step t + 1 read as u_prev, so each stored membrane is
  // loaded once. With reset_delay it is also h; otherwise h comes from `pre`.
  A u = kDelay ? static_cast<A>(mem[(steps - 1) * m + n]) : A(0);
  for (int64_t t0 = steps - 1; t0 >= 0; t0 -= kBatch) {
    const int64_t len = std::min<int64_t>(kBatch, t0 + 1);
    A u_prev[kBatch], h[kBatch], g_spk[kBatch], g_mem[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) {
        const int64_t t = t0 - k, off = t * m + n;
        u_prev[k] = t > 0 ? static_cast<A>(mem[off - m]) : first_prev;
        if constexpr (!kDelay) h[k] = static_cast<A>(pre[off]);
        g_spk[k] = load_grad<T, A>(grad_spk, t, n);
        g_mem[k] = load_grad<T, A>(grad_mem, t, n);
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) {
        const A gx = lif_step_backward<S, R, kDelay>(kDelay ? u : h[k], u_prev[k], g_spk[k],
                                                     g_mem[k], beta_c, thr, graded, p0, p1,
                                                     &carry, &d_beta, &d_thr, &d_graded);
        grad_x[(t0 - k) * m + n] = static_cast<T>(gx);
        u = u_prev[k];
      }
    }
  }
  grad_mem0[n] = static_cast<T>(carry);
  if (grad_beta != nullptr) {
    grad_beta[n] = d_beta * clamp01_grad(beta_raw);
    grad_thr[n] = d_thr;
    grad_graded[n] = d_graded;
  }
}

unsigned neuron_blocks(int64_t m) { return static_cast<unsigned>(ceil_div(m, kThreads)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_forward_cuda(
    const at::Tensor& x, const c10::optional<at::Tensor>& mem0, const at::Tensor& beta,
    const at::Tensor& threshold, const at::Tensor& graded, int64_t /*surrogate*/, double /*p0*/,
    double /*p1*/, int64_t reset, bool reset_delay) {
  check_cuda_input(x, "x");
  const int64_t steps = x.size(0), m = x.size(1);
  check_state(mem0, x);
  check_param(beta, "beta", x, m);
  check_param(threshold, "threshold", x, m);
  check_param(graded, "graded", x, m);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor spk = empty_output(x.sizes(), x.options());
  at::Tensor mem = empty_output(x.sizes(), x.options());
  at::Tensor pre = empty_output(reset_delay ? at::IntArrayRef{0} : x.sizes(), x.options());
  if (x.numel() == 0) return {spk, mem, pre};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_forward_cuda",
                                  [&] {
    using T = scalar_t;
    using A = at::acc_type<T, /*is_cuda=*/true>;
    const Params<A> params = params_of<A>(beta, threshold, graded);
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    T* pre_ptr = reset_delay ? nullptr : pre.data_ptr<T>();
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      lif_forward_kernel<T, A, decltype(r)::value, decltype(delay)::value>
          <<<neuron_blocks(m), kThreads, 0, current_stream()>>>(
              x.data_ptr<T>(), mem0_ptr, params, spk.data_ptr<T>(), mem.data_ptr<T>(), pre_ptr,
              steps, m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {spk, mem, pre};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_backward_cuda(
    const c10::optional<at::Tensor>& grad_spk, const c10::optional<at::Tensor>& grad_mem,
    const at::Tensor& mem, const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
    const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
    int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay,
    bool param_grads) {
  check_cuda_input(mem, "mem");
  const int64_t steps = mem.size(0), m = mem.size(1);
  check_backward_args(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                      reset_delay);
  const c10::cuda::CUDAGuard guard(mem.device());
  const auto acc = mem.options().dtype(accumulation_dtype(mem.scalar_type()));
  at::Tensor grad_x = empty_output(mem.sizes(), mem.options());
  NeuronGrads g(m, mem.options(), acc, param_grads);
  if (m == 0 || steps == 0) {
    g.set_empty_result(param_grads, beta, threshold, graded);
    return {grad_x, g.mem0, g.beta, g.threshold, g.graded};
  }
  at::Tensor &grad_mem0 = g.mem0, &grad_beta = g.beta, &grad_thr = g.threshold,
             &grad_graded = g.graded;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mem.scalar_type(),
                                  "lif_backward_cuda", [&] {
    using T = scalar_t;
    using A = at::acc_type<T, /*is_cuda=*/true>;
    const Params<A> params = params_of<A>(beta, threshold, graded);
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    const T* pre_ptr = reset_delay ? nullptr : pre_reset.data_ptr<T>();
    A* gb = param_grads ? grad_beta.data_ptr<A>() : nullptr;
    A* gt = param_grads ? grad_thr.data_ptr<A>() : nullptr;
    A* gg = param_grads ? grad_graded.data_ptr<A>() : nullptr;
    dispatch_surrogate(surrogate, [&](auto s) {
      dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
        lif_backward_kernel<T, A, decltype(s)::value, decltype(r)::value, decltype(delay)::value>
            <<<neuron_blocks(m), kThreads, 0, current_stream()>>>(
                grad_rows<T>(grad_spk, m), grad_rows<T>(grad_mem, m), mem.data_ptr<T>(),
                pre_ptr, mem0_ptr, params, static_cast<A>(p0), static_cast<A>(p1),
                grad_x.data_ptr<T>(), grad_mem0.data_ptr<T>(), gb, gt, gg, steps, m);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  g.reduce_params(param_grads, column_sums, beta, threshold, graded);
  return {grad_x, g.mem0, g.beta, g.threshold, g.graded};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CUDA, m) {
  m.impl("lif_forward", &lif_forward_cuda);
  m.impl("lif_backward", &lif_backward_cuda);
}

}  // namespace snnkernels
