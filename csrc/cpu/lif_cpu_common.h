// Pieces shared by the CPU LIF kernels (lif_cpu.cpp: the forward, the dense and the masked
// backward; lif_constant_cpu.cpp): chunking, per-task scratch, parameters, the forward's and
// the dense backward's rows.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../lif_checks.h"
#include "../lif_dispatch.h"
#include "policy.h"

namespace snnkernels {
namespace cpu {

// Neurons per chunk: at most max_chunk() (policy.h); at least two chunks per thread when there
// is enough work. Results do not depend on it: every neuron is computed the same way in any chunk.
inline int64_t chunk_width(int64_t m, int64_t max_width = max_chunk()) {
  const int64_t parts = 2 * static_cast<int64_t>(at::get_num_threads());
  const int64_t width = ((m + parts - 1) / parts + 63) / 64 * 64;
  return std::clamp<int64_t>(width, 64, max_width);
}

// Per-task scratch: `count` arrays of `width` values each, allocated once per parallel task and
// left uninitialized (every kernel fills an array before reading it; zeroing them was a visible
// share of a single-step call).
template <typename T>
struct Scratch {
  std::unique_ptr<T[]> storage;
  int64_t width;
  Scratch(int64_t count, int64_t w) : storage(new T[count * w]), width(w) {}
  T* array(int64_t i) { return storage.get() + i * width; }
};

// A parameter with P elements; neuron n uses element n % P (see the schema in ops.cpp).
struct Param {
  const void* data;
  int64_t period;
};

// The values of one chunk of neurons, gathered once so the time loop reads contiguous arrays.
// No integer division per element: with T = 1 (a single-step call) this load is most of the
// kernel, and a `%` per neuron and parameter cost several times the LIF math.
template <typename T>
void load_chunk(const Param& p, int64_t n0, int64_t len, T* dst) {
  const T* src = static_cast<const T*>(p.data);
  if (p.period == 1) {
    std::fill(dst, dst + len, src[0]);
    return;
  }
  int64_t j = n0 % p.period;
  for (int64_t i = 0; i < len;) {
    const int64_t run = std::min(len - i, p.period - j);  // contiguous until the period wraps
    std::copy(src + j, src + j + run, dst + i);
    i += run;
    j = 0;
  }
}

struct Params {
  Param beta, threshold, graded;
  // One value for every neuron (scalar parameters, the usual case).
  bool uniform() const { return beta.period == 1 && threshold.period == 1 && graded.period == 1; }
};

// A chunk's parameters when every neuron has the same values (Params::uniform): the row loops
// then use these locals instead of reading three per-neuron arrays (a faster forward).
template <typename T>
struct UniformParams {
  T beta, thr, graded;
  UniformParams(const T* beta_c, const T* thr_c, const T* graded_c)
      : beta(beta_c[0]), thr(thr_c[0]), graded(graded_c[0]) {}
};

inline Params params_of(const at::Tensor& beta, const at::Tensor& thr, const at::Tensor& graded) {
  return {{beta.data_ptr(), beta.numel()},
          {thr.data_ptr(), thr.numel()},
          {graded.data_ptr(), graded.numel()}};
}

template <typename T>
struct ChunkParams {
  T *beta_raw, *beta_c, *thr, *graded;
  explicit ChunkParams(Scratch<T>& s)
      : beta_raw(s.array(0)), beta_c(s.array(1)), thr(s.array(2)), graded(s.array(3)) {}
  static constexpr int64_t kArrays = 4;  // the first kArrays arrays of the scratch
  void load(const Params& p, int64_t n0, int64_t len) {
    load_chunk(p.beta, n0, len, beta_raw);
    load_chunk(p.threshold, n0, len, thr);
    load_chunk(p.graded, n0, len, graded);
    for (int64_t i = 0; i < len; ++i) beta_c[i] = clamp01(beta_raw[i]);
  }
};

// out[p] = sum over j ascending of partial[j * P + p] (P = 1: in 8 interleaved lanes),
// accumulated in double. Threads split the p range only, so the order of every sum is fixed:
// same bits for any thread count.
inline at::Tensor reduce_periodic(const at::Tensor& partial, int64_t period) {
  const int64_t m = partial.numel();
  if (period == m) return partial;
  at::Tensor out = empty_output({period}, partial.options());
  AT_DISPATCH_FLOATING_TYPES(partial.scalar_type(), "reduce_periodic", [&] {
    const scalar_t* src = partial.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    if (period == 1) {
      // One sum over all M (a scalar parameter): 8 interleaved lanes, combined in lane order,
      // so it vectorizes (one dependent chain of M additions is slow) and the order is fixed.
      constexpr int64_t kLanes = 8;
      double lanes[kLanes] = {};
      int64_t j = 0;
      for (; j + kLanes <= m; j += kLanes) {
        for (int64_t i = 0; i < kLanes; ++i) lanes[i] += static_cast<double>(src[j + i]);
      }
      double total = 0.0;
      for (int64_t i = 0; i < kLanes; ++i) total += lanes[i];
      for (; j < m; ++j) total += static_cast<double>(src[j]);
      dst[0] = static_cast<scalar_t>(total);
      return;
    }
    constexpr int64_t kBlock = 256;
    at::parallel_for(0, period, kBlock, [&](int64_t p_begin, int64_t p_end) {
      double acc[kBlock];
      for (int64_t p0 = p_begin; p0 < p_end; p0 += kBlock) {
        const int64_t len = std::min(kBlock, p_end - p0);
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

// An upstream gradient as the backward loop reads it: row t starts at base + t * step
// (step = M for a full [T, M] tensor, 0 for one row broadcast over T (lif_checks.h) or a
// chunk-local broadcast or zero row).
template <typename T>
struct GradRows {
  const T* base;
  int64_t step;
};

template <typename T>
GradRows<T> grad_rows(const c10::optional<at::Tensor>& g, int64_t n0, int64_t len,
                      T* local) {
  if (g.has_value() && g->numel() != 1) return {g->data_ptr<T>() + n0, g->stride(0)};
  std::fill(local, local + len, g.has_value() ? g->data_ptr<T>()[0] : T(0));
  return {local, 0};
}

inline void check_cpu_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "snnkernels: on the CPU x must be float32 or float64, got ", x.scalar_type());
}

// One time step of one chunk of the forward: u_prev -> u_out, spk, and h_out = the pre-reset
// membrane without a reset delay. The loops live in functions of their own because GCC trusts
// __restrict__ on parameters, not on pointers loaded from a lambda's captures or a struct: with
// the loop inline in the kernel it gave up ("complicated access pattern") and did not vectorize.
template <typename T, Reset R, bool kDelay, bool kUniform>
void forward_row(const T* __restrict__ x, const T* __restrict__ u_prev, T* __restrict__ u_out,
                 T* __restrict__ h_out, const T* __restrict__ beta_c, const T* __restrict__ thr,
                 const T* __restrict__ graded, T* __restrict__ spk, int64_t len) {
  const UniformParams<T> one(beta_c, thr, graded);
  for (int64_t i = 0; i < len; ++i) {
    T s, u;
    const T h = lif_step<R, kDelay>(x[i], u_prev[i], kUniform ? one.beta : beta_c[i],
                                    kUniform ? one.thr : thr[i],
                                    kUniform ? one.graded : graded[i], &s, &u);
    spk[i] = s;
    u_out[i] = u;
    if constexpr (!kDelay) h_out[i] = h;
  }
}

// One time step of one chunk of the dense backward, walking backwards (a function of its own:
// GCC trusts __restrict__ on parameters, not on pointers loaded from a lambda's captures).
// Also the TopK backward's step without `temporal` (its carry is the dense one).
// h: membrane before this step's own reset; u_prev: what the previous step returned. Without
// parameter gradients the sums go to locals that GCC drops. kSumX: grad_x accumulates dL/dx over
// the steps instead of receiving this step's (lif_constant_cpu.cpp).
template <typename T, Surrogate S, Reset R, bool kDelay, bool kParamGrads, bool kUniform,
          bool kSumX = false>
void backward_row(const T* __restrict__ h, const T* __restrict__ u_prev,
                  const T* __restrict__ g_spk, const T* __restrict__ g_mem,
                  const T* __restrict__ beta_c, const T* __restrict__ thr,
                  const T* __restrict__ graded, T p0, T p1, T* __restrict__ grad_x,
                  T* __restrict__ carry, T* __restrict__ d_beta, T* __restrict__ d_thr,
                  T* __restrict__ d_graded, int64_t len) {
  const UniformParams<T> one(beta_c, thr, graded);
  for (int64_t i = 0; i < len; ++i) {
    const T b = kUniform ? one.beta : beta_c[i], th = kUniform ? one.thr : thr[i],
            gr = kUniform ? one.graded : graded[i];
    T g_x;
    if constexpr (kParamGrads) {
      g_x = lif_step_backward<S, R, kDelay>(h[i], u_prev[i], g_spk[i], g_mem[i], b, th, gr, p0,
                                            p1, &carry[i], &d_beta[i], &d_thr[i], &d_graded[i]);
    } else {
      T unused_beta = T(0), unused_thr = T(0), unused_graded = T(0);
      g_x = lif_step_backward<S, R, kDelay>(h[i], u_prev[i], g_spk[i], g_mem[i], b, th, gr, p0,
                                            p1, &carry[i], &unused_beta, &unused_thr,
                                            &unused_graded);
    }
    grad_x[i] = kSumX ? grad_x[i] + g_x : g_x;
  }
}

// The end of a chunk's backward: dL/dmem0 is the last carry; the per-neuron parameter sums go
// to [M] partials (beta's with the clamp mask), reduced to P elements by reduce_periodic.
template <typename T>
void store_chunk_grads(const ChunkParams<T>& cp, const T* carry, const T* d_beta,
                       const T* d_thr, const T* d_graded, bool param_grads, int64_t n0,
                       int64_t len, T* grad_mem0, T* grad_beta, T* grad_thr, T* grad_graded) {
  std::copy(carry, carry + len, grad_mem0 + n0);
  if (!param_grads) return;
  for (int64_t i = 0; i < len; ++i) {
    grad_beta[n0 + i] = d_beta[i] * clamp01_grad(cp.beta_raw[i]);
    grad_thr[n0 + i] = d_thr[i];
    grad_graded[n0 + i] = d_graded[i];
  }
}

}  // namespace cpu
}  // namespace snnkernels
