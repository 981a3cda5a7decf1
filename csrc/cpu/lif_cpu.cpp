// Fused multi-step LIF forward and surrogate-gradient backward on the CPU.
//
// Layout: time-major [T, M]. Neurons are split into chunks (chunk_width); a chunk keeps its
// state (membrane, carry, parameter-gradient sums) in per-task arrays that stay in cache, walks
// time once, and its inner loop runs over contiguous neurons with no data-dependent branches, so
// GCC vectorizes it (this file is built with -fno-trapping-math: without it GCC 12 compiles the
// compare-selects to branches and does not vectorize). Chunks run
// in parallel with at::parallel_for; each neuron's sums are accumulated by one thread in time
// order, so results are the same bits for any thread count.
//
// Saved for backward (by the Python autograd, see snnkernels/_ops.py): with reset_delay=True only
// the returned membrane `mem` (one value, 4 bytes per element in float32; no extra memory when
// the caller keeps `mem`); with reset_delay=False also the pre-reset membrane (8 bytes per
// element in float32), since the same-step reset is not invertible (reset to zero forgets it).
#include <torch/library.h>

#include "lif_cpu.h"
#include "lif_cpu_common.h"

namespace snnkernels {
namespace {

using namespace cpu;

// One time step of one chunk. The loops live in functions of their own because GCC trusts
// __restrict__ on parameters, not on pointers loaded from a lambda's captures or a struct: with
// the loop inline in the kernel it gave up ("complicated access pattern") and did not vectorize.
// kInPlace: the input is read from mem (x is unused) and overwritten by the membrane.
template <typename T, Reset R, bool kDelay, bool kUniform, bool kInPlace>
void forward_row(const T* __restrict__ x, T* __restrict__ state, const T* __restrict__ beta_c,
                 const T* __restrict__ thr, const T* __restrict__ graded, T* __restrict__ spk,
                 T* __restrict__ mem, T* __restrict__ pre, int64_t len) {
  const UniformParams<T> one(beta_c, thr, graded);
  for (int64_t i = 0; i < len; ++i) {
    T s, u;
    const T h = lif_step<R, kDelay>(kInPlace ? mem[i] : x[i], state[i],
                                    kUniform ? one.beta : beta_c[i],
                                    kUniform ? one.thr : thr[i],
                                    kUniform ? one.graded : graded[i], &s, &u);
    spk[i] = s;
    mem[i] = u;
    if constexpr (!kDelay) pre[i] = h;
    state[i] = u;
  }
}

// kInPlace: x is mem (contiguous [T, M]), each value read before the membrane overwrites it.
template <typename T, Reset R, bool kDelay, bool kInPlace>
void forward_kernel(const T* x, int64_t x_step, const T* __restrict__ mem0, Params params,
                    T* __restrict__ spk, T* mem, T* __restrict__ pre, int64_t steps, int64_t m) {
  const int64_t width = chunk_width(m);
  const int64_t chunks = (m + width - 1) / width;
  const auto row_fn = params.uniform() ? forward_row<T, R, kDelay, true, kInPlace>
                                       : forward_row<T, R, kDelay, false, kInPlace>;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    Scratch<T> scratch(ChunkParams<T>::kArrays + 1, width);
    ChunkParams<T> cp(scratch);
    T* __restrict__ state = scratch.array(ChunkParams<T>::kArrays);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * width;
      const int64_t len = std::min(width, m - n0);
      cp.load(params, n0, len);
      if (mem0 != nullptr) {
        std::copy(mem0 + n0, mem0 + n0 + len, state);
      } else {
        std::fill(state, state + len, T(0));
      }
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t off = t * m + n0;
        row_fn(kInPlace ? nullptr : x + t * x_step + n0, state, cp.beta_c, cp.thr, cp.graded,
               spk + off, mem + off, kDelay ? nullptr : pre + off, len);
      }
    }
  });
}

template <typename T, Surrogate S, Reset R, bool kDelay, bool kParamGrads>
void backward_kernel(const c10::optional<at::Tensor>& grad_spk,
                     const c10::optional<at::Tensor>& grad_mem, const T* __restrict__ mem,
                     const T* __restrict__ pre, const T* __restrict__ mem0, Params params,
                     T p0, T p1, T* __restrict__ grad_x, T* __restrict__ grad_mem0,
                     T* __restrict__ grad_beta, T* __restrict__ grad_thr,
                     T* __restrict__ grad_graded, int64_t steps, int64_t m) {
  const int64_t width = chunk_width(m);
  const int64_t chunks = (m + width - 1) / width;
  const auto row_fn = params.uniform() ? backward_row<T, S, R, kDelay, kParamGrads, true>
                                       : backward_row<T, S, R, kDelay, kParamGrads, false>;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    constexpr int64_t kBase = ChunkParams<T>::kArrays;
    Scratch<T> scratch(kBase + 7, width);
    ChunkParams<T> cp(scratch);
    T* __restrict__ zeros = scratch.array(kBase);
    T* __restrict__ gs_local = scratch.array(kBase + 1);
    T* __restrict__ gm_local = scratch.array(kBase + 2);
    T* __restrict__ carry = scratch.array(kBase + 3);
    T* __restrict__ d_beta = scratch.array(kBase + 4);
    T* __restrict__ d_thr = scratch.array(kBase + 5);
    T* __restrict__ d_graded = scratch.array(kBase + 6);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * width;
      const int64_t len = std::min(width, m - n0);
      cp.load(params, n0, len);
      const GradRows<T> gs = grad_rows(grad_spk, n0, len, gs_local);
      const GradRows<T> gm = grad_rows(grad_mem, n0, len, gm_local);
      std::fill(carry, carry + len, T(0));
      if constexpr (kParamGrads) {
        std::fill(d_beta, d_beta + len, T(0));
        std::fill(d_thr, d_thr + len, T(0));
        std::fill(d_graded, d_graded + len, T(0));
      }
      const T* first_prev = mem0 != nullptr ? mem0 + n0 : zeros;
      if (mem0 == nullptr) std::fill(zeros, zeros + len, T(0));
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t off = t * m + n0;
        row_fn(
            kDelay ? mem + off : pre + off, t > 0 ? mem + off - m : first_prev,
            gs.base + t * gs.step, gm.base + t * gm.step, cp.beta_c, cp.thr, cp.graded, p0, p1,
            grad_x + off, carry, d_beta, d_thr, d_graded, len);
      }
      store_chunk_grads(cp, carry, d_beta, d_thr, d_graded, kParamGrads, n0, len, grad_mem0,
                        grad_beta, grad_thr, grad_graded);
    }
  });
}

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// lif_forward's checks and outputs; in_place: mem is x itself (lif_forward_cpu_in_place).
Triple forward_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& mem0,
                   const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
                   int64_t reset, bool reset_delay, bool in_place) {
  TORCH_CHECK(x.dim() == 2, "snnkernels: x must be [T, M], got ", x.sizes());
  check_cpu_dtype(x);
  const int64_t steps = x.size(0), m = x.size(1);
  // Contiguous, or one row broadcast over time (stride 0 over T: a constant input current, as
  // TabularSNN's direct encoder gives), read in place instead of copied T times.
  const bool rows_contiguous = m <= 1 || x.stride(1) == 1;
  const bool broadcast = rows_contiguous && steps > 1 && x.stride(0) == 0;
  TORCH_CHECK(x.is_contiguous() || (broadcast && !in_place),
              "snnkernels: x must be contiguous [T, M] or one contiguous row broadcast over T, "
              "got strides ", x.strides());
  const int64_t x_step = broadcast ? 0 : m;
  check_state(mem0, x);
  check_param(beta, "beta", x, m);
  check_param(threshold, "threshold", x, m);
  check_param(graded, "graded", x, m);
  at::Tensor spk = empty_output(x.sizes(), x.options());
  at::Tensor mem = in_place ? x : empty_output(x.sizes(), x.options());
  at::Tensor pre = empty_output(reset_delay ? at::IntArrayRef{0} : x.sizes(), x.options());
  if (x.numel() == 0) return {spk, mem, pre};
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward_cpu", [&] {
    const scalar_t* mem0_ptr = mem0.has_value() ? mem0->data_ptr<scalar_t>() : nullptr;
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      constexpr Reset R = decltype(r)::value;
      constexpr bool kDelay = decltype(delay)::value;
      const auto kernel = in_place ? forward_kernel<scalar_t, R, kDelay, true>
                                   : forward_kernel<scalar_t, R, kDelay, false>;
      kernel(x.data_ptr<scalar_t>(), x_step, mem0_ptr, params, spk.data_ptr<scalar_t>(),
             mem.data_ptr<scalar_t>(), reset_delay ? nullptr : pre.data_ptr<scalar_t>(), steps,
             m);
    });
  });
  return {spk, mem, pre};
}

Triple lif_forward_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& mem0,
                       const at::Tensor& beta, const at::Tensor& threshold,
                       const at::Tensor& graded, int64_t /*surrogate*/, double /*p0*/,
                       double /*p1*/, int64_t reset, bool reset_delay) {
  return forward_cpu(x, mem0, beta, threshold, graded, reset, reset_delay, /*in_place=*/false);
}

using Quint = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Quint lif_backward_cpu(const c10::optional<at::Tensor>& grad_spk,
                       const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem,
                       const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
                       const at::Tensor& beta, const at::Tensor& threshold,
                       const at::Tensor& graded, int64_t surrogate, double p0, double p1,
                       int64_t reset, bool reset_delay, bool param_grads) {
  TORCH_CHECK(mem.dim() == 2 && mem.is_contiguous(), "snnkernels: mem must be contiguous [T, M]");
  check_cpu_dtype(mem);
  const int64_t steps = mem.size(0), m = mem.size(1);
  check_backward_args(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                      reset_delay);
  at::Tensor grad_x = empty_output(mem.sizes(), mem.options());
  NeuronGrads g(m, mem.options(), mem.options(), param_grads);
  if (m == 0 || steps == 0) {
    g.set_empty_result(param_grads, beta, threshold, graded);
    return {grad_x, g.mem0, g.beta, g.threshold, g.graded};
  }
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(mem.scalar_type(), "lif_backward_cpu", [&] {
    using T = scalar_t;
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    T* gb = param_grads ? g.beta.data_ptr<T>() : nullptr;
    T* gt = param_grads ? g.threshold.data_ptr<T>() : nullptr;
    T* gg = param_grads ? g.graded.data_ptr<T>() : nullptr;
    dispatch_backward(surrogate, reset, reset_delay, param_grads, [&](auto s, auto r, auto delay,
                                                                      auto with_params) {
      backward_kernel<T, decltype(s)::value, decltype(r)::value, decltype(delay)::value,
                      decltype(with_params)::value>(
          grad_spk, grad_mem, mem.data_ptr<T>(), reset_delay ? nullptr : pre_reset.data_ptr<T>(),
          mem0_ptr, params, static_cast<T>(p0), static_cast<T>(p1), grad_x.data_ptr<T>(),
          g.mem0.data_ptr<T>(), gb, gt, gg, steps, m);
    });
  });
  g.reduce_params(param_grads, reduce_periodic, beta, threshold, graded);
  return {grad_x, g.mem0, g.beta, g.threshold, g.graded};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_forward_cpu_in_place(
    const at::Tensor& x, const at::Tensor& beta, const at::Tensor& threshold,
    const at::Tensor& graded, int64_t reset, bool reset_delay) {
  return forward_cpu(x, c10::nullopt, beta, threshold, graded, reset, reset_delay,
                     /*in_place=*/true);
}

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
}

}  // namespace snnkernels
