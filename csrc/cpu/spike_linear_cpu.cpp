// Event-driven synapse for sparse inputs (binary spikes from an LIF layer, or any mostly-zero x),
// on the CPU: the work follows the nonzeros of x instead of a dense GEMM.
//   spike_linear:      out[r, :] = bias + sum over f with x[r, f] != 0, ascending, of
//                                  x[r, f] * W[:, f]                      (x [R, F], W [N, F])
//   spike_weight_grad: grad_W[:, f] = sum over r with x[r, f] != 0, ascending, of
//                                  x[r, f] * grad[r, :]                   (grad [R, N]),
//                      summed over each of a fixed number of row ranges, then those added
// Cost O(nnz(x) * N) against the GEMMs' O(R * F * N). linear_lif picks these over the GEMMs by
// the rule in spike_linear.h (thresholds in policy.h). Deterministic: every output row (for
// spike_weight_grad, every row of each half's partial) is summed by one task in a fixed order,
// so the bits do not depend on the thread count; they differ from the GEMM's in rounding only
// (another summation order).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "../lif_checks.h"
#include "simd.h"
#include "spike_linear.h"

namespace snnkernels {
namespace {

// acc[0, n) += v * w[0, n): a function of its own so GCC trusts __restrict__ and vectorizes it.
template <typename T>
void axpy(T v, const T* __restrict__ w, T* __restrict__ acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += v * w[i];
}

// The portable kernels (any floating type; also float32 without AVX-512). out rows [r0, r1).
template <typename T>
void spike_linear_rows(const T* xp, int64_t f, const T* wp, int64_t n, const T* bp, T* op,
                       int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    T* acc = op + r * n;
    if (bp != nullptr) {
      std::copy(bp, bp + n, acc);
    } else {
      std::fill(acc, acc + n, T(0));
    }
    const T* xr = xp + r * f;
    for (int64_t j = 0; j < f; ++j) {
      if (xr[j] != T(0)) axpy(xr[j], wp + j * n, acc, n);
    }
  }
}

// grad_wt rows [f0, f1) (zeroed by the caller): every row r of x, in order. With bias_sum (zeroed
// by the caller): also every row of grad added onto it, in order (1 * g is g: the same terms as
// a feature that is 1 on every row).
template <typename T>
void spike_weight_grad_features(const T* xp, int64_t rows, int64_t f, const T* gp, int64_t n,
                                T* wp, int64_t f0, int64_t f1, T* bias_sum) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = xp + r * f;
    for (int64_t j = f0; j < f1; ++j) {
      if (xr[j] != T(0)) axpy(xr[j], gp + r * n, wp + j * n, n);
    }
    if (bias_sum != nullptr) axpy(T(1), gp + r * n, bias_sum, n);
  }
}

}  // namespace

#if defined(__x86_64__)
namespace avx512 {  // float32 with AVX-512: spike_linear_avx512.cpp
__attribute__((target("avx512f"))) void spike_linear_rows(const float* xp, int64_t f,
                                                          const float* wp, int64_t n,
                                                          const float* bp, float* op, int64_t r0,
                                                          int64_t r1);
__attribute__((target("avx512f"))) void spike_weight_grad_features(
    const float* xp, int64_t rows, int64_t f, const float* gp, int64_t n, float* wp, int64_t f0,
    int64_t f1, float* bias_sum);
}  // namespace avx512
#endif

namespace {

// The kernel for T: the AVX-512 one for float32 where it runs, else the portable one.
template <typename T>
void linear_rows(const T* xp, int64_t f, const T* wp, int64_t n, const T* bp, T* op, int64_t r0,
                 int64_t r1) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (cpu::use_avx512()) return avx512::spike_linear_rows(xp, f, wp, n, bp, op, r0, r1);
  }
#endif
  spike_linear_rows(xp, f, wp, n, bp, op, r0, r1);
}

template <typename T>
void weight_grad_features(const T* xp, int64_t rows, int64_t f, const T* gp, int64_t n, T* wp,
                          int64_t f0, int64_t f1, T* bias_sum) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (cpu::use_avx512()) {
      return avx512::spike_weight_grad_features(xp, rows, f, gp, n, wp, f0, f1, bias_sum);
    }
  }
#endif
  spike_weight_grad_features(xp, rows, f, gp, n, wp, f0, f1, bias_sum);
}

void check_dense_2d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), "snnkernels: ", name,
              " must be contiguous 2-D, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "snnkernels: on the CPU ", name, " must be float32 or float64, got ",
              t.scalar_type());
}

}  // namespace

at::Tensor spike_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias) {
  check_dense_2d(x, "x");
  check_dense_2d(weight, "weight");
  TORCH_CHECK(weight.size(1) == x.size(1) && weight.scalar_type() == x.scalar_type(),
              "snnkernels: weight must be [N, F = ", x.size(1), "] of x's dtype, got ",
              weight.sizes());
  const int64_t rows = x.size(0), f = x.size(1), n = weight.size(0);
  check_bias(bias, n, x);
  at::Tensor out = empty_output({rows, n}, x.options());
  if (out.numel() == 0) return out;
  const at::Tensor wt = weight.t().contiguous();  // [F, N]: the rows the events add
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spike_linear_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* wp = wt.data_ptr<T>();
    const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    // At least 64 rows a task: a second thread first pulls all of wt from the other core's cache,
    // which costs more than a few rows' work.
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      linear_rows(xp, f, wp, n, bp, op, r0, r1);
    });
  });
  return out;
}

namespace {

// Rows per part: whole 64-row tiles (the AVX-512 kernel's block).
int64_t weight_grad_part_rows(int64_t rows) {
  const int64_t parts = cpu::weight_grad_parts();  // policy.h
  return std::max<int64_t>(64, ((rows + parts - 1) / parts + 63) / 64 * 64);
}

// dst[0, len) += src[0, len), in parallel (a function of its own so GCC vectorizes it).
template <typename T>
void add_onto(T* __restrict__ dst, const T* __restrict__ src, int64_t len) {
  at::parallel_for(0, len, 4096, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) dst[i] += src[i];
  });
}

}  // namespace

// The task holding a part's feature 0 also sums the part's bias, rows in order, while its tiles
// of grad are in cache (linear_dense_backward's event path: no separate pass over grad).
std::tuple<at::Tensor, at::Tensor> spike_weight_grad_cpu(const at::Tensor& grad,
                                                        const at::Tensor& x, bool need_bias) {
  check_dense_2d(grad, "grad");
  check_dense_2d(x, "x");
  TORCH_CHECK(grad.size(0) == x.size(0) && grad.scalar_type() == x.scalar_type(),
              "snnkernels: grad [R, N] and x [R, F] need the same R and dtype, got ", grad.sizes(),
              " and ", x.sizes());
  const int64_t rows = x.size(0), f = x.size(1), n = grad.size(1);
  const int64_t part_rows = weight_grad_part_rows(rows);
  const int64_t parts = std::max<int64_t>(1, (rows + part_rows - 1) / part_rows);
  // Part p sums the events of its rows into an [F, N] (row f: those of feature f): part 0 into
  // grad_wt, the others into `more` (two allocations keep each below glibc's mmap threshold,
  // whose fresh pages were slow to zero).
  at::Tensor grad_wt = at::zeros({f, n}, x.options());
  at::Tensor more = at::zeros({parts - 1, f, n}, x.options());
  at::Tensor grad_bias = at::zeros({need_bias ? n : 0}, x.options());
  at::Tensor more_bias = at::zeros({parts - 1, need_bias ? n : 0}, x.options());
  if (n != 0 && rows != 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spike_weight_grad_cpu", [&] {
      using T = scalar_t;
      const T* xp = x.data_ptr<T>();
      const T* gp = grad.data_ptr<T>();
      T* wp = grad_wt.data_ptr<T>();
      T* bp = need_bias ? grad_bias.data_ptr<T>() : nullptr;
      auto part_sums = [&](int64_t p) {
        return p == 0 ? wp : more.data_ptr<T>() + (p - 1) * f * n;
      };
      auto part_bias = [&](int64_t p) {
        return bp == nullptr ? nullptr : p == 0 ? bp : more_bias.data_ptr<T>() + (p - 1) * n;
      };
      if (f == 0) {  // no features: only the bias sums, rows in order
        if (bp != nullptr) weight_grad_features(xp, rows, f, gp, n, wp, 0, 0, bp);
        return;
      }
      // A task owns a range of (part, feature) pairs and walks the part's rows in order: each
      // partial row has one owner that adds its terms in ascending r.
      at::parallel_for(0, parts * f, 8, [&](int64_t i0, int64_t i1) {
        for (int64_t p = i0 / f; p * f < i1; ++p) {
          const int64_t f0 = std::max(i0, p * f) - p * f, f1 = std::min(i1, (p + 1) * f) - p * f;
          const int64_t r0 = p * part_rows, r1 = std::min(rows, r0 + part_rows);
          weight_grad_features(xp + r0 * f, r1 - r0, f, gp + r0 * n, n, part_sums(p), f0, f1,
                               f0 == 0 ? part_bias(p) : nullptr);
        }
      });
      for (int64_t p = 1; p < parts; ++p) {  // the parts added onto part 0 in order
        add_onto(wp, part_sums(p), f * n);
        if (bp != nullptr) add_onto(bp, part_bias(p), n);
      }
    });
  }
  return {grad_wt.t().contiguous(), grad_bias};
}

namespace {

// The nonzeros of n <= 2^31 values given as their bits: a value is zero (+0 or -0) when its bits
// without the sign bit are 0. Integer compares and a 32-bit count vectorize in every clone (the
// float compare into a 64-bit count did not).
template <typename Bits>
int64_t count_nonzero_bits(const Bits* p, int64_t n) {
  // All bits but the sign (the inner cast: ~ on uint16_t gives an int).
  constexpr Bits kMagnitude = static_cast<Bits>(static_cast<Bits>(~Bits(0)) >> 1);
  uint32_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += (p[i] & kMagnitude) != 0;
  return count;
}
SNN_CLONES int64_t count_nonzero(const uint16_t* p, int64_t n) { return count_nonzero_bits(p, n); }
SNN_CLONES int64_t count_nonzero(const uint32_t* p, int64_t n) { return count_nonzero_bits(p, n); }
SNN_CLONES int64_t count_nonzero(const uint64_t* p, int64_t n) { return count_nonzero_bits(p, n); }

}  // namespace

// Counting stops once the limit is passed (dense inputs, the common case, decide after a small
// part of x), and runs in parallel otherwise: torch.count_nonzero took as long as the GEMM it
// was deciding about.
bool event_driven(const at::Tensor& x) {
  if (!x.is_cpu() || x.numel() == 0 || !at::isFloatingType(x.scalar_type())) return false;
  const at::Tensor xc = x.contiguous();
  const int64_t numel = xc.numel();
  const auto limit =
      static_cast<int64_t>(cpu::event_max_density(xc.scalar_type()) * static_cast<double>(numel));
  std::atomic<int64_t> total{0};
  auto count = [&](const auto* p) {
    constexpr int64_t kBlock = 8192;
    at::parallel_for(0, numel, 4 * kBlock, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; s += kBlock) {
        if (total.load(std::memory_order_relaxed) > limit) return;
        total.fetch_add(count_nonzero(p + s, std::min(end, s + kBlock) - s),
                        std::memory_order_relaxed);
      }
    });
  };
  switch (xc.element_size()) {
    case 2: count(static_cast<const uint16_t*>(xc.const_data_ptr())); break;
    case 4: count(static_cast<const uint32_t*>(xc.const_data_ptr())); break;
    case 8: count(static_cast<const uint64_t*>(xc.const_data_ptr())); break;
    default: TORCH_CHECK(false, "snnkernels: event_driven: unexpected dtype ", xc.scalar_type());
  }
  return total.load() <= limit;
}

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("event_driven", &event_driven);
  m.impl("spike_linear", &spike_linear_cpu);
  m.impl("spike_weight_grad", &spike_weight_grad_cpu);
}

}  // namespace snnkernels
