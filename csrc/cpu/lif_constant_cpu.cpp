// The LIF driven by one input current held constant over T steps (TabularSNN's direct encoder
// gives the same current at every step), on the CPU. Same per-step math as lif_cpu.cpp, but
// nothing [T, M] is saved: the forward writes only the spikes, and the backward recomputes each
// chunk's membrane trajectory from the [M] current into a per-task array that stays in cache,
// then walks it backwards, summing dL/dx over time as it goes. Against lif_forward on
// x.expand(T, M) followed by autograd's sum over T, that skips writing and rereading the
// membrane and writing and rereading a [T, M] grad_x.
//
// Saved for backward (snnkernels/_ops.py): the current x [M] and mem0 [M], nothing per step.
// Each neuron's time sum is accumulated by one thread from t = T-1 down to 0, so the bits do not
// depend on the thread count.
#include <torch/library.h>

#include "lif_cpu_common.h"

namespace snnkernels {
namespace {

using namespace cpu;

// Neurons per chunk of the backward: as many as fit constant_task_bytes() with `arrays` arrays of
// one value per neuron besides the trajectory (T rows, two arrays without a reset delay), in
// multiples of 64, at least 64 (lif_cpu's chunk_width when that is smaller), at most M (a long
// sequence of a few neurons must not get a trajectory of 64).
template <typename T>
int64_t backward_chunk_width(int64_t steps, int64_t m, bool delay, int64_t arrays) {
  const int64_t per_neuron = (steps * (delay ? 1 : 2) + arrays) * int64_t(sizeof(T));
  const int64_t fit = std::max<int64_t>(constant_task_bytes() / per_neuron / 64 * 64, 64);
  return std::min({chunk_width(m), fit, m});
}

template <typename T, Reset R, bool kDelay>
void forward_kernel(const T* __restrict__ x, const T* __restrict__ mem0, Params params,
                    T* __restrict__ spk, int64_t steps, int64_t m) {
  const int64_t width = chunk_width(m);
  const int64_t chunks = (m + width - 1) / width;
  const auto row_fn =
      params.uniform() ? forward_row<T, R, kDelay, true> : forward_row<T, R, kDelay, false>;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    constexpr int64_t kBase = ChunkParams<T>::kArrays;
    Scratch<T> scratch(kBase + 3, width);
    ChunkParams<T> cp(scratch);
    T* state[2] = {scratch.array(kBase), scratch.array(kBase + 1)};  // ping-pong over t
    T* __restrict__ h_unused = scratch.array(kBase + 2);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * width;
      const int64_t len = std::min(width, m - n0);
      cp.load(params, n0, len);
      if (mem0 != nullptr) {
        std::copy(mem0 + n0, mem0 + n0 + len, state[0]);
      } else {
        std::fill(state[0], state[0] + len, T(0));
      }
      for (int64_t t = 0; t < steps; ++t) {
        row_fn(x + n0, state[t & 1], state[(t + 1) & 1], h_unused, cp.beta_c, cp.thr, cp.graded,
               spk + t * m + n0, len);
      }
    }
  });
}

template <typename T, Surrogate S, Reset R, bool kDelay, bool kParamGrads>
void backward_kernel(const c10::optional<at::Tensor>& grad_spk, const T* __restrict__ x,
                     const T* __restrict__ mem0, Params params, T p0, T p1,
                     T* __restrict__ grad_x, T* __restrict__ grad_mem0, T* __restrict__ grad_beta,
                     T* __restrict__ grad_thr, T* __restrict__ grad_graded, int64_t steps,
                     int64_t m) {
  constexpr int64_t kRows = ChunkParams<T>::kArrays + 8;  // the arrays before the trajectory
  const int64_t width = backward_chunk_width<T>(steps, m, kDelay, kRows);
  const int64_t chunks = (m + width - 1) / width;
  const auto step_fn =
      params.uniform() ? forward_row<T, R, kDelay, true> : forward_row<T, R, kDelay, false>;
  const auto grad_fn =
      params.uniform() ? backward_row<T, S, R, kDelay, kParamGrads, true, /*kSumX=*/true>
                       : backward_row<T, S, R, kDelay, kParamGrads, false, /*kSumX=*/true>;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    constexpr int64_t kBase = ChunkParams<T>::kArrays;
    Scratch<T> scratch(kRows + steps * (kDelay ? 1 : 2), width);
    ChunkParams<T> cp(scratch);
    T* __restrict__ zeros = scratch.array(kBase);
    T* __restrict__ gs_local = scratch.array(kBase + 1);
    T* __restrict__ carry = scratch.array(kBase + 2);
    T* __restrict__ d_beta = scratch.array(kBase + 3);
    T* __restrict__ d_thr = scratch.array(kBase + 4);
    T* __restrict__ d_graded = scratch.array(kBase + 5);
    T* __restrict__ gx_sum = scratch.array(kBase + 6);
    T* __restrict__ spk_unused = scratch.array(kBase + 7);
    T* const u_traj = scratch.array(kRows);                   // u_t: row t
    T* const h_traj = kDelay ? u_traj : u_traj + steps * width;  // h_t without a reset delay
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * width;
      const int64_t len = std::min(width, m - n0);
      cp.load(params, n0, len);
      std::fill(zeros, zeros + len, T(0));
      const T* first_prev = mem0 != nullptr ? mem0 + n0 : zeros;
      const T* prev = first_prev;
      for (int64_t t = 0; t < steps; ++t) {  // the forward again, keeping every step's membrane
        step_fn(x + n0, prev, u_traj + t * width, h_traj + t * width, cp.beta_c, cp.thr,
                cp.graded, spk_unused, len);
        prev = u_traj + t * width;
      }
      const GradRows<T> gs = grad_rows(grad_spk, n0, len, gs_local);
      std::fill(carry, carry + len, T(0));
      std::fill(gx_sum, gx_sum + len, T(0));
      if constexpr (kParamGrads) {
        std::fill(d_beta, d_beta + len, T(0));
        std::fill(d_thr, d_thr + len, T(0));
        std::fill(d_graded, d_graded + len, T(0));
      }
      for (int64_t t = steps - 1; t >= 0; --t) {
        // mem is not an output here, so its upstream gradient is zero
        grad_fn(h_traj + t * width, t > 0 ? u_traj + (t - 1) * width : first_prev,
                gs.base + t * gs.step, zeros, cp.beta_c, cp.thr, cp.graded, p0, p1, gx_sum,
                carry, d_beta, d_thr, d_graded, len);
      }
      std::copy(gx_sum, gx_sum + len, grad_x + n0);
      store_chunk_grads(cp, carry, d_beta, d_thr, d_graded, kParamGrads, n0, len, grad_mem0,
                        grad_beta, grad_thr, grad_graded);
    }
  });
}

void check_constant_args(const at::Tensor& x, int64_t steps,
                         const c10::optional<at::Tensor>& mem0, const at::Tensor& beta,
                         const at::Tensor& threshold, const at::Tensor& graded) {
  TORCH_CHECK(x.dim() == 1 && x.is_contiguous(), "snnkernels: x must be contiguous [M], got ",
              x.sizes());
  check_cpu_dtype(x);
  TORCH_CHECK(steps >= 0, "snnkernels: steps must be >= 0, got ", steps);
  const at::Tensor row = x.view({1, x.numel()});  // the [T, M] checks, on one step
  check_state(mem0, row);
  check_param(beta, "beta", row, x.numel());
  check_param(threshold, "threshold", row, x.numel());
  check_param(graded, "graded", row, x.numel());
}

at::Tensor lif_constant_forward_cpu(const at::Tensor& x, int64_t steps,
                                    const c10::optional<at::Tensor>& mem0,
                                    const at::Tensor& beta, const at::Tensor& threshold,
                                    const at::Tensor& graded, int64_t /*surrogate*/,
                                    double /*p0*/, double /*p1*/, int64_t reset,
                                    bool reset_delay) {
  check_constant_args(x, steps, mem0, beta, threshold, graded);
  const int64_t m = x.numel();
  at::Tensor spk = empty_output({steps, m}, x.options());
  if (spk.numel() == 0) return spk;
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_constant_forward_cpu", [&] {
    const scalar_t* mem0_ptr = mem0.has_value() ? mem0->data_ptr<scalar_t>() : nullptr;
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      forward_kernel<scalar_t, decltype(r)::value, decltype(delay)::value>(
          x.data_ptr<scalar_t>(), mem0_ptr, params, spk.data_ptr<scalar_t>(), steps, m);
    });
  });
  return spk;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_constant_backward_cpu(
    const c10::optional<at::Tensor>& grad_spk, const at::Tensor& x, int64_t steps,
    const c10::optional<at::Tensor>& mem0, const at::Tensor& beta, const at::Tensor& threshold,
    const at::Tensor& graded, int64_t surrogate, double p0, double p1, int64_t reset,
    bool reset_delay, bool param_grads) {
  check_constant_args(x, steps, mem0, beta, threshold, graded);
  const int64_t m = x.numel();
  // the [steps, M] spikes it is the gradient of, as a view of x (nothing is allocated)
  check_grad(grad_spk, "grad_spk", x.view({1, m}).expand({steps, m}));
  at::Tensor grad_x = empty_output({m}, x.options());
  NeuronGrads g(m, x.options(), beta.options(), param_grads);
  if (m == 0 || steps == 0) {
    grad_x.zero_();
    g.set_empty_result(param_grads, beta, threshold, graded);
    return {grad_x, g.mem0, g.beta, g.threshold, g.graded};
  }
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_constant_backward_cpu", [&] {
    using T = scalar_t;
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    T* gb = param_grads ? g.beta.data_ptr<T>() : nullptr;
    T* gt = param_grads ? g.threshold.data_ptr<T>() : nullptr;
    T* gg = param_grads ? g.graded.data_ptr<T>() : nullptr;
    dispatch_backward(surrogate, reset, reset_delay, param_grads, [&](auto s, auto r, auto delay,
                                                                      auto with_params) {
      backward_kernel<T, decltype(s)::value, decltype(r)::value, decltype(delay)::value,
                      decltype(with_params)::value>(
          grad_spk, x.data_ptr<T>(), mem0_ptr, params, static_cast<T>(p0), static_cast<T>(p1),
          grad_x.data_ptr<T>(), g.mem0.data_ptr<T>(), gb, gt, gg, steps, m);
    });
  });
  g.reduce_params(param_grads, reduce_periodic, beta, threshold, graded);
  return {grad_x, g.mem0, g.beta, g.threshold, g.graded};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("lif_constant_forward", &lif_constant_forward_cpu);
  m.impl("lif_constant_backward", &lif_constant_backward_cpu);
}

}  // namespace snnkernels
