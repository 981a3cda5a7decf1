// The narrow layer's synapse on the CPU (narrow_linear.h): loops over the rows of x that GCC
// vectorizes, compiled for AVX-512, AVX2 and the baseline (target_clones). Every version does the
// same float operations in the same order (lanes are independent, and -ffp-contract=off keeps
// products and sums separate), so the bits do not depend on the CPU.
#include <ATen/Parallel.h>

#include <algorithm>

#include "../lif_checks.h"
#include "narrow_linear.h"
#include "simd.h"

namespace snnkernels {
namespace {

constexpr int64_t kLanes = 16;

// sum over i < f of x[i] * w[i]: kLanes interleaved lanes (lane l takes i = l mod kLanes), then
// added as a fixed tree (8 + 8, 4 + 4, 2 + 2, 1 + 1: four dependent adds, not fifteen).
template <typename T>
inline __attribute__((always_inline)) T dot_lanes(const T* __restrict__ x,
                                                  const T* __restrict__ w, int64_t f) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= f; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += x[i + l] * w[i + l];
  }
  for (int64_t l = 0; i + l < f; ++l) acc[l] += x[i + l] * w[i + l];
  for (int64_t half = kLanes / 2; half >= 1; half /= 2) {
    for (int64_t l = 0; l < half; ++l) acc[l] += acc[l + half];
  }
  return acc[0];
}

// out[r, j] = dot_lanes(x[r], W[j]) (+ bias[j]).
template <typename T>
inline __attribute__((always_inline)) void forward_rows_impl(const T* x, int64_t f, const T* w,
                                                             int64_t n, const T* bias, T* out,
                                                             int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      const T sum = dot_lanes(x + r * f, w + j * f, f);
      out[r * n + j] = bias != nullptr ? sum + bias[j] : sum;
    }
  }
}

// Rows [r0, r1) for N outputs: grad_x rows (when gx), and this block's partial sums of
// grad_weight (gw [N, F]) and grad_bias (gb [N]) over its rows in order (when not null). The
// weight sums take kGroup rows per pass over gw, adding their terms one row after the other (the
// order of a row-by-row loop, at a quarter of the loads and stores of gw).
template <int N, typename T>
inline __attribute__((always_inline)) void backward_rows_n(
    const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w, int64_t f,
    int64_t r0, int64_t r1, T* __restrict__ gx, T* __restrict__ gw, T* __restrict__ gb) {
  constexpr int64_t kGroup = 4;
  if (gw != nullptr) std::fill(gw, gw + N * f, T(0));
  if (gb != nullptr) std::fill(gb, gb + N, T(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* gr = g + r * N;
    if (gx != nullptr) {  // grad_x[r] = sum over j ascending of grad[r, j] * W[j]
      T* out = gx + r * f;
      for (int64_t i = 0; i < f; ++i) {
        T sum = gr[0] * w[i];
        for (int j = 1; j < N; ++j) sum += gr[j] * w[j * f + i];
        out[i] = sum;
      }
    }
    if (gb != nullptr) {
      for (int j = 0; j < N; ++j) gb[j] += gr[j];
    }
  }
  if (gw == nullptr) return;
  int64_t r = r0;
  for (; r + kGroup <= r1; r += kGroup) {
    const T *x0 = x + r * f, *x1 = x0 + f, *x2 = x1 + f, *x3 = x2 + f;
    const T* gr = g + r * N;
    for (int j = 0; j < N; ++j) {
      const T a0 = gr[j], a1 = gr[N + j], a2 = gr[2 * N + j], a3 = gr[3 * N + j];
      T* acc = gw + j * f;
      for (int64_t i = 0; i < f; ++i) {
        acc[i] = (((acc[i] + a0 * x0[i]) + a1 * x1[i]) + a2 * x2[i]) + a3 * x3[i];
      }
    }
  }
  for (; r < r1; ++r) {
    const T* xr = x + r * f;
    for (int j = 0; j < N; ++j) {
      const T a = g[r * N + j];
      T* acc = gw + j * f;
      for (int64_t i = 0; i < f; ++i) acc[i] += a * xr[i];
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void backward_rows_impl(const T* g, const T* x,
                                                              const T* w, int64_t n, int64_t f,
                                                              int64_t r0, int64_t r1, T* gx,
                                                              T* gw, T* gb) {
  switch (n) {
#define SNN_CASE(N) \
  case N:           \
    return backward_rows_n<N>(g, x, w, f, r0, r1, gx, gw, gb);
    SNN_CASE(1) SNN_CASE(2) SNN_CASE(3) SNN_CASE(4)
#undef SNN_CASE
  }
}

SNN_CLONES void forward_rows(const float* x, int64_t f, const float* w, int64_t n,
                             const float* bias, float* out, int64_t r0, int64_t r1) {
  forward_rows_impl(x, f, w, n, bias, out, r0, r1);
}
SNN_CLONES void forward_rows(const double* x, int64_t f, const double* w, int64_t n,
                             const double* bias, double* out, int64_t r0, int64_t r1) {
  forward_rows_impl(x, f, w, n, bias, out, r0, r1);
}
SNN_CLONES void backward_rows(const float* g, const float* x, const float* w, int64_t n,
                              int64_t f, int64_t r0, int64_t r1, float* gx, float* gw,
                              float* gb) {
  backward_rows_impl(g, x, w, n, f, r0, r1, gx, gw, gb);
}
SNN_CLONES void backward_rows(const double* g, const double* x, const double* w, int64_t n,
                              int64_t f, int64_t r0, int64_t r1, double* gx, double* gw,
                              double* gb) {
  backward_rows_impl(g, x, w, n, f, r0, r1, gx, gw, gb);
}

void check_2d(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), "snnkernels: ", name,
              " must be contiguous 2-D, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(), "snnkernels: ",
              name, " must match x in dtype and device");
}

// Blocks of rows for the weight and bias sums: a function of R alone (never of the thread
// count), at most 64 of them so the partial sums stay small.
int64_t row_blocks(int64_t rows) {
  constexpr int64_t kMinRows = 256, kMaxBlocks = 64;
  return std::clamp<int64_t>((rows + kMinRows - 1) / kMinRows, 1, kMaxBlocks);
}

}  // namespace

at::Tensor narrow_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias) {
  check_2d(x, "x", x);
  check_2d(weight, "weight", x);
  const int64_t rows = x.size(0), f = x.size(1), n = weight.size(0);
  TORCH_CHECK(weight.size(1) == f, "snnkernels: weight must be [N, F = ", f, "], got ",
              weight.sizes());
  check_bias(bias, n, x);
  at::Tensor out = empty_output({rows, n}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "narrow_linear_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* wp = weight.data_ptr<T>();
    const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      forward_rows(xp, f, wp, n, bp, op, r0, r1);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> narrow_linear_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, bool need_x,
    bool need_weight, bool need_bias) {
  check_2d(x, "x", x);
  check_2d(grad, "grad", x);
  check_2d(weight, "weight", x);
  const int64_t rows = x.size(0), f = x.size(1), n = weight.size(0);
  TORCH_CHECK(grad.size(0) == rows && grad.size(1) == n && weight.size(1) == f,
              "snnkernels: narrow linear backward needs grad [R, N], x [R, F], weight [N, F], "
              "got ", grad.sizes(), ", ", x.sizes(), ", ", weight.sizes());
  const auto opts = x.options();
  at::Tensor grad_x = empty_output({need_x ? rows : 0, f}, opts);
  at::Tensor grad_weight = empty_output({need_weight ? n : 0, f}, opts);
  at::Tensor grad_bias = empty_output({need_bias ? n : 0}, opts);
  if (rows == 0 || n == 0) {  // sums over no rows; or no neurons, no terms in grad_x
    grad_x.zero_();
    grad_weight.zero_();
    grad_bias.zero_();
    return {grad_x, grad_weight, grad_bias};
  }
  if (!need_x && !need_weight && !need_bias) return {grad_x, grad_weight, grad_bias};
  const int64_t blocks = row_blocks(rows), per_block = (rows + blocks - 1) / blocks;
  at::Tensor weight_parts = at::empty({need_weight ? blocks : 0, n * f}, opts);
  at::Tensor bias_parts = at::empty({need_bias ? blocks : 0, n}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "narrow_linear_backward_cpu", [&] {
    using T = scalar_t;
    const T* gp = grad.data_ptr<T>();
    const T* xp = x.data_ptr<T>();
    const T* wp = weight.data_ptr<T>();
    T* gxp = need_x ? grad_x.data_ptr<T>() : nullptr;
    T* wparts = need_weight ? weight_parts.data_ptr<T>() : nullptr;
    T* bparts = need_bias ? bias_parts.data_ptr<T>() : nullptr;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * per_block, r1 = std::min(rows, r0 + per_block);
        backward_rows(gp, xp, wp, n, f, r0, r1, gxp,
                      wparts != nullptr ? wparts + b * n * f : nullptr,
                      bparts != nullptr ? bparts + b * n : nullptr);
      }
    });
    // The block partials added in block order (parallel over the outputs only).
    auto add_blocks = [blocks](const T* parts, int64_t width, T* out) {
      at::parallel_for(0, width, 1024, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          T sum = parts[i];
          for (int64_t b = 1; b < blocks; ++b) sum += parts[b * width + i];
          out[i] = sum;
        }
      });
    };
    if (need_weight) add_blocks(wparts, n * f, grad_weight.data_ptr<T>());
    if (need_bias) add_blocks(bparts, n, grad_bias.data_ptr<T>());
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace snnkernels
