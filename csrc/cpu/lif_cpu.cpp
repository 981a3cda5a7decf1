// Fused multi-step LIF forward and surrogate-gradient backward on the CPU.
//
// Layout: time-major [T, M]. Neurons are split into chunks of kChunk; a chunk keeps its state
// (membrane, carry, parameter-gradient sums) in small stack arrays that stay in L1, walks time
// once, and its inner loop runs over contiguous neurons with no data-dependent branches, so GCC
// vectorizes it (this file is built with -fno-trapping-math; see ../../shared notes). Chunks run
// in parallel with at::parallel_for; each neuron's sums are accumulated by one thread in time
// order, so results are the same bits for any thread count.
//
// Saved for backward (by the Python autograd, see snnkernels/_ops.py): with reset_delay=True only
// the returned membrane `mem` (one value, 4 bytes per element in float32; no extra memory when
// the caller keeps `mem`); with reset_delay=False also the pre-reset membrane (8 bytes per
// element in float32), since the same-step reset is not invertible (reset to zero forgets it).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../lif_checks.h"
#include "../lif_dispatch.h"

namespace snnkernels {
namespace {

constexpr int64_t kChunk = 256;

// A parameter with P elements; neuron n uses element n % P (see the schema in ops.cpp).
struct Param {
  const void* data;
  int64_t period;
};

// The values of one chunk of neurons, gathered once so the time loop reads contiguous arrays.
template <typename T>
void load_chunk(const Param& p, int64_t n0, int64_t len, T* dst) {
  const T* src = static_cast<const T*>(p.data);
  for (int64_t i = 0; i < len; ++i) dst[i] = src[(n0 + i) % p.period];
}

struct Params {
  Param beta, threshold, graded;
};

Params params_of(const at::Tensor& beta, const at::Tensor& thr, const at::Tensor& graded) {
  return {{beta.data_ptr(), beta.numel()},
          {thr.data_ptr(), thr.numel()},
          {graded.data_ptr(), graded.numel()}};
}

template <typename T>
struct ChunkParams {
  T beta_raw[kChunk], beta_c[kChunk], thr[kChunk], graded[kChunk];
  void load(const Params& p, int64_t n0, int64_t len) {
    load_chunk(p.beta, n0, len, beta_raw);
    load_chunk(p.threshold, n0, len, thr);
    load_chunk(p.graded, n0, len, graded);
    for (int64_t i = 0; i < len; ++i) beta_c[i] = clamp01(beta_raw[i]);
  }
};

// out[p] = sum over j ascending of partial[j * P + p], accumulated in double. Threads split the
// p range only, so the order of every sum is fixed: same bits for any thread count.
at::Tensor reduce_periodic(const at::Tensor& partial, int64_t period) {
  const int64_t m = partial.numel();
  if (period == m) return partial;
  at::Tensor out = empty_output({period}, partial.options());
  AT_DISPATCH_FLOATING_TYPES(partial.scalar_type(), "reduce_periodic", [&] {
    const scalar_t* src = partial.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, period, kChunk, [&](int64_t p_begin, int64_t p_end) {
      double acc[kChunk];
      for (int64_t p0 = p_begin; p0 < p_end; p0 += kChunk) {
        const int64_t len = std::min(kChunk, p_end - p0);
        std::fill(acc, acc + len, 0.0);
        for (int64_t j = 0; j < m; j += period) {
          for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(src[j + p0 + i]);
        }
        for (int64_t i = 0; i < len; ++i) dst[p0 + i] = static_cast<scalar_t>(acc[i]);
      }
    });
  });
  return out;
}

template <typename T, Reset R, bool kDelay>
void forward_kernel(const T* __restrict__ x, const T* __restrict__ mem0, Params params,
                    T* __restrict__ spk, T* __restrict__ mem, T* __restrict__ pre, int64_t steps,
                    int64_t m) {
  const int64_t chunks = (m + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    ChunkParams<T> cp;
    T state[kChunk];
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * kChunk;
      const int64_t len = std::min(kChunk, m - n0);
      cp.load(params, n0, len);
      if (mem0 != nullptr) {
        std::copy(mem0 + n0, mem0 + n0 + len, state);
      } else {
        std::fill(state, state + len, T(0));
      }
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t off = t * m + n0;
        const T* __restrict__ xt = x + off;
        T* __restrict__ st = spk + off;
        T* __restrict__ mt = mem + off;
        T* __restrict__ ht = kDelay ? nullptr : pre + off;
        for (int64_t i = 0; i < len; ++i) {
          T s, u;
          const T h = lif_step<R, kDelay>(xt[i], state[i], cp.beta_c[i], cp.thr[i], cp.graded[i],
                                          &s, &u);
          st[i] = s;
          mt[i] = u;
          if constexpr (!kDelay) ht[i] = h;
          state[i] = u;
        }
      }
    }
  });
}

// An upstream gradient as the backward loop reads it: row t starts at base + t * step
// (step = M for a full [T, M] tensor, 0 for a chunk-local broadcast or zero row).
template <typename T>
struct GradRows {
  const T* base;
  int64_t step;
};

template <typename T>
GradRows<T> grad_rows(const c10::optional<at::Tensor>& g, int64_t m, int64_t n0, int64_t len,
                      T* local) {
  if (g.has_value() && g->numel() != 1) return {g->data_ptr<T>() + n0, m};
  std::fill(local, local + len, g.has_value() ? g->data_ptr<T>()[0] : T(0));
  return {local, 0};
}

template <typename T, Surrogate S, Reset R, bool kDelay>
void backward_kernel(const c10::optional<at::Tensor>& grad_spk,
                     const c10::optional<at::Tensor>& grad_mem, const T* __restrict__ mem,
                     const T* __restrict__ pre, const T* __restrict__ mem0, Params params,
                     T p0, T p1, T* __restrict__ grad_x, T* __restrict__ grad_mem0,
                     T* __restrict__ grad_beta, T* __restrict__ grad_thr,
                     T* __restrict__ grad_graded, int64_t steps, int64_t m) {
  const int64_t chunks = (m + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    ChunkParams<T> cp;
    T zeros[kChunk], gs_local[kChunk], gm_local[kChunk];
    T carry[kChunk], d_beta[kChunk], d_thr[kChunk], d_graded[kChunk];
    std::fill(zeros, zeros + kChunk, T(0));
    const T sp0 = p0, sp1 = p1;  // locals: the compiler need not reload them through a capture
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * kChunk;
      const int64_t len = std::min(kChunk, m - n0);
      cp.load(params, n0, len);
      const GradRows<T> gs = grad_rows(grad_spk, m, n0, len, gs_local);
      const GradRows<T> gm = grad_rows(grad_mem, m, n0, len, gm_local);
      std::fill(carry, carry + len, T(0));
      std::fill(d_beta, d_beta + len, T(0));
      std::fill(d_thr, d_thr + len, T(0));
      std::fill(d_graded, d_graded + len, T(0));
      const T* first_prev = mem0 != nullptr ? mem0 + n0 : zeros;
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t off = t * m + n0;
        const T* __restrict__ ut = mem + off;
        const T* __restrict__ ht = kDelay ? ut : pre + off;
        const T* __restrict__ up = t > 0 ? mem + off - m : first_prev;
        const T* __restrict__ gst = gs.base + t * gs.step;
        const T* __restrict__ gmt = gm.base + t * gm.step;
        T* __restrict__ gxt = grad_x + off;
        for (int64_t i = 0; i < len; ++i) {
          gxt[i] = lif_step_backward<S, R, kDelay>(ht[i], up[i], gst[i], gmt[i], cp.beta_c[i],
                                                   cp.thr[i], cp.graded[i], sp0, sp1, &carry[i],
                                                   &d_beta[i], &d_thr[i], &d_graded[i]);
        }
      }
      std::copy(carry, carry + len, grad_mem0 + n0);
      if (grad_beta != nullptr) {
        for (int64_t i = 0; i < len; ++i) {
          grad_beta[n0 + i] = d_beta[i] * clamp01_grad(cp.beta_raw[i]);
          grad_thr[n0 + i] = d_thr[i];
          grad_graded[n0 + i] = d_graded[i];
        }
      }
    }
  });
}

void check_cpu_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "snnkernels: on the CPU x must be float32 or float64, got ", x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_forward_cpu(
    const at::Tensor& x, const c10::optional<at::Tensor>& mem0, const at::Tensor& beta,
    const at::Tensor& threshold, const at::Tensor& graded, int64_t /*surrogate*/, double /*p0*/,
    double /*p1*/, int64_t reset, bool reset_delay) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "snnkernels: x must be contiguous [T, M]");
  check_cpu_dtype(x);
  const int64_t steps = x.size(0), m = x.size(1);
  check_state(mem0, x);
  check_param(beta, "beta", x, m);
  check_param(threshold, "threshold", x, m);
  check_param(graded, "graded", x, m);
  at::Tensor spk = empty_output(x.sizes(), x.options());
  at::Tensor mem = empty_output(x.sizes(), x.options());
  at::Tensor pre = empty_output(reset_delay ? at::IntArrayRef{0} : x.sizes(), x.options());
  if (x.numel() == 0) return {spk, mem, pre};
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward_cpu", [&] {
    const scalar_t* mem0_ptr = mem0.has_value() ? mem0->data_ptr<scalar_t>() : nullptr;
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      forward_kernel<scalar_t, decltype(r)::value, decltype(delay)::value>(
          x.data_ptr<scalar_t>(), mem0_ptr, params, spk.data_ptr<scalar_t>(),
          mem.data_ptr<scalar_t>(), reset_delay ? nullptr : pre.data_ptr<scalar_t>(), steps, m);
    });
  });
  return {spk, mem, pre};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_backward_cpu(
    const c10::optional<at::Tensor>& grad_spk, const c10::optional<at::Tensor>& grad_mem,
    const at::Tensor& mem, const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
    const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
    int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay,
    bool param_grads) {
  TORCH_CHECK(mem.dim() == 2 && mem.is_contiguous(), "snnkernels: mem must be contiguous [T, M]");
  check_cpu_dtype(mem);
  const int64_t steps = mem.size(0), m = mem.size(1);
  if (!reset_delay) check_time_major(pre_reset, "pre_reset", mem);
  check_grad(grad_spk, "grad_spk", mem);
  check_grad(grad_mem, "grad_mem", mem);
  check_state(mem0, mem);
  check_param(beta, "beta", mem, m);
  check_param(threshold, "threshold", mem, m);
  check_param(graded, "graded", mem, m);
  const auto acc = mem.options();
  at::Tensor grad_x = empty_output(mem.sizes(), mem.options());
  at::Tensor grad_mem0 = empty_output({m}, mem.options());
  // Per-neuron partial sums over time; reduced to each parameter's P elements at the end.
  at::Tensor grad_beta = empty_output({param_grads ? m : 0}, acc);
  at::Tensor grad_thr = empty_output({param_grads ? m : 0}, acc);
  at::Tensor grad_graded = empty_output({param_grads ? m : 0}, acc);
  if (m == 0 || steps == 0) {
    grad_mem0.zero_();
    if (!param_grads) return {grad_x, grad_mem0, grad_beta, grad_thr, grad_graded};
    return {grad_x, grad_mem0, at::zeros_like(beta), at::zeros_like(threshold),
            at::zeros_like(graded)};
  }
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(mem.scalar_type(), "lif_backward_cpu", [&] {
    using T = scalar_t;
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    T* gb = param_grads ? grad_beta.data_ptr<T>() : nullptr;
    T* gt = param_grads ? grad_thr.data_ptr<T>() : nullptr;
    T* gg = param_grads ? grad_graded.data_ptr<T>() : nullptr;
    dispatch_surrogate(surrogate, [&](auto s) {
      dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
        backward_kernel<T, decltype(s)::value, decltype(r)::value, decltype(delay)::value>(
            grad_spk, grad_mem, mem.data_ptr<T>(),
            reset_delay ? nullptr : pre_reset.data_ptr<T>(), mem0_ptr, params,
            static_cast<T>(p0), static_cast<T>(p1), grad_x.data_ptr<T>(),
            grad_mem0.data_ptr<T>(), gb, gt, gg, steps, m);
      });
    });
  });
  if (!param_grads) return {grad_x, grad_mem0, grad_beta, grad_thr, grad_graded};
  return {grad_x, grad_mem0, reduce_periodic(grad_beta, beta.numel()),
          reduce_periodic(grad_thr, threshold.numel()), reduce_periodic(grad_graded, graded.numel())};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
}

}  // namespace snnkernels
