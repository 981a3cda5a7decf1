// Event-driven synapse for sparse inputs (binary spikes from an LIF layer, or any mostly-zero x),
// on the CPU: the work follows the nonzeros of x instead of a dense GEMM.
//   spike_linear:      out[r, :] = bias + sum over f with x[r, f] != 0, ascending, of
//                                  x[r, f] * W[:, f]                      (x [R, F], W [N, F])
//   spike_weight_grad: grad_W[:, f] = sum over r with x[r, f] != 0, ascending, of
//                                  x[r, f] * grad[r, :]                   (grad [R, N]),
//                      summed over each of two halves of the rows, then the halves added
// Cost O(nnz(x) * N) against the GEMMs' O(R * F * N). linear_lif picks these over the GEMMs when
// the measured density of x is below event_max_density (event_linear.h; the crossovers measured
// in benchmarks/results/event_cpu*.md). Deterministic: every output row (for spike_weight_grad,
// every row of each half's partial) is summed by one task in a fixed order, so the bits do not
// depend on the thread count; they differ from the GEMM's in rounding only (another summation
// order).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "../event_linear.h"
#include "avx512.h"
#include "../lif_checks.h"

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

#if defined(__x86_64__)
// float32 with AVX-512: the same sums in the same order, so the same bits (each term v * w is
// rounded, then added onto the running sum; for v == 1 the term is w itself). What differs: the
// nonzeros of x are found as bit masks (16 compares at a time, no branch per entry), and the
// running sums of kSlice outputs at a time stay in registers. Measured in
// benchmarks/results/event_cpu.md (the portable loops: event_cpu_portable.md).
namespace avx512 {

constexpr int kMaxVectors = 8;  // outputs per register block: 8 x 16 floats
constexpr int64_t kSlice = 16 * kMaxVectors;

// Bit j set where x[j] != 0, j < len <= 64 (NaN counts, -0.0 does not: the portable x != 0).
// `ones` is cleared when a nonzero is not 1.
__attribute__((target("avx512f"))) uint64_t nonzero_bits(const float* x, int64_t len,
                                                        bool& ones) {
  uint64_t bits = 0;
  for (int64_t j = 0; j < len; j += 16) {
    const __mmask16 lanes = lanes_below(len - j);
    const __m512 xv = _mm512_maskz_loadu_ps(lanes, x + j);
    const __mmask16 nz = _mm512_mask_cmp_ps_mask(lanes, xv, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __mmask16 one = _mm512_mask_cmp_ps_mask(lanes, xv, _mm512_set1_ps(1.0f), _CMP_EQ_OQ);
    ones = ones && nz == one;
    bits |= static_cast<uint64_t>(nz) << j;
  }
  return bits;
}

// In place: bit c of a[r] becomes bit r of a[c] (a 64 x 64 bit matrix transposed by swapping
// ever smaller blocks; Hacker's Delight, 7-3).
inline void transpose_bits(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k | j] ^= t;
      a[k] ^= t << j;
    }
  }
}

// out[0, V * 16) (the last vector's lanes `tail` only) = start + the sum over the events i, the
// set bits of masks[0, words) (i = 64 * word + bit) ascending, of x[i * xstride] *
// rows[i * stride + (0, V * 16)]; start = init, or zeros when init is null. kOnes: every x[i]
// is 1.
template <int V, bool kOnes>
__attribute__((target("avx512f"))) void sum_events(const uint64_t* masks, int64_t words,
                                                   const float* rows, int64_t stride,
                                                   const float* x, int64_t xstride,
                                                   const float* init, __mmask16 tail, float* out) {
  auto lanes = [tail](int v) { return v == V - 1 ? tail : __mmask16(0xffff); };
  // Two arrays of at most 4: GCC 12 kept a single array of 8 on the stack as well, stored every
  // event (forward and dW 1.2x slower at 128 x 128, 17.5%).
  constexpr int kLow = V < 4 ? V : 4;
  __m512 low[kLow], high[V - kLow > 0 ? V - kLow : 1];
  for (int v = 0; v < kLow; ++v) {
    low[v] = init != nullptr ? _mm512_maskz_loadu_ps(lanes(v), init + 16 * v) : _mm512_setzero_ps();
  }
  for (int v = kLow; v < V; ++v) {
    high[v - kLow] =
        init != nullptr ? _mm512_maskz_loadu_ps(lanes(v), init + 16 * v) : _mm512_setzero_ps();
  }
  for (int64_t w = 0; w < words; ++w) {
    for (uint64_t events = masks[w]; events != 0; events &= events - 1) {
      const int64_t i = 64 * w + __builtin_ctzll(events);
      const float* row = rows + i * stride;
      const __m512 s = _mm512_set1_ps(kOnes ? 1.0f : x[i * xstride]);
      for (int v = 0; v < kLow; ++v) {
        const __m512 term = _mm512_maskz_loadu_ps(lanes(v), row + 16 * v);
        low[v] = _mm512_add_ps(low[v], kOnes ? term : _mm512_mul_ps(s, term));
      }
      for (int v = kLow; v < V; ++v) {
        const __m512 term = _mm512_maskz_loadu_ps(lanes(v), row + 16 * v);
        high[v - kLow] = _mm512_add_ps(high[v - kLow], kOnes ? term : _mm512_mul_ps(s, term));
      }
    }
  }
  for (int v = 0; v < kLow; ++v) _mm512_mask_storeu_ps(out + 16 * v, lanes(v), low[v]);
  for (int v = kLow; v < V; ++v) _mm512_mask_storeu_ps(out + 16 * v, lanes(v), high[v - kLow]);
}

// sum_events over outputs [0, width), kSlice at a time.
__attribute__((target("avx512f"))) void sum_events_wide(const uint64_t* masks, int64_t words,
                                                        bool ones, const float* rows,
                                                        int64_t stride, const float* x,
                                                        int64_t xstride, const float* init,
                                                        int64_t width, float* out) {
  for (int64_t c0 = 0; c0 < width; c0 += kSlice) {
    const int64_t left = width - c0;
    const int vectors = static_cast<int>(std::min<int64_t>(kMaxVectors, (left + 15) / 16));
    const __mmask16 tail = lanes_below(left - 16 * (vectors - 1));
    const float* start = init != nullptr ? init + c0 : nullptr;
    switch (vectors) {
#define SNN_CASE(V)                                                                           \
  case V:                                                                                     \
    if (ones) {                                                                               \
      sum_events<V, true>(masks, words, rows + c0, stride, x, xstride, start, tail, out + c0); \
    } else {                                                                                  \
      sum_events<V, false>(masks, words, rows + c0, stride, x, xstride, start, tail, out + c0); \
    }                                                                                         \
    break;
      SNN_CASE(1) SNN_CASE(2) SNN_CASE(3) SNN_CASE(4) SNN_CASE(5) SNN_CASE(6) SNN_CASE(7)
      SNN_CASE(8)
#undef SNN_CASE
    }
  }
}

// out row r = bias + the rows of wt [F, N] of x[r]'s nonzeros, ascending.
__attribute__((target("avx512f"))) void spike_linear_rows(const float* xp, int64_t f,
                                                          const float* wp, int64_t n,
                                                          const float* bp, float* op, int64_t r0,
                                                          int64_t r1) {
  const int64_t words = (f + 63) / 64;
  std::vector<uint64_t> masks(words);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = xp + r * f;
    bool ones = true;
    for (int64_t w = 0; w < words; ++w) {
      masks[w] = nonzero_bits(xr + 64 * w, std::min<int64_t>(64, f - 64 * w), ones);
    }
    sum_events_wide(masks.data(), words, ones, wp, n, xr, 1, bp, n, op + r * n);
  }
}

// grad_wt rows [f0, f1), zeroed by the caller, in tiles of 64 rows of x x 64 features: the
// nonzeros of the tile become a bit per (row, feature), transposed to a row set per feature, and
// each feature's rows of grad are summed in registers onto its running sum, a slice of kSlice
// outputs at a time (the tile's rows of that slice of grad, 32 KB, stay in L1). With bias_sum
// (zeroed by the caller), every row of the tile is then added onto it, as a feature set on all
// rows (the portable loop's terms and order).
__attribute__((target("avx512f"))) void spike_weight_grad_features(
    const float* xp, int64_t rows, int64_t f, const float* gp, int64_t n, float* wp, int64_t f0,
    int64_t f1, float* bias_sum) {
  uint64_t bits[64];
  for (int64_t b0 = 0; b0 < rows; b0 += 64) {
    const int64_t block = std::min<int64_t>(64, rows - b0);
    if (bias_sum != nullptr) {
      const uint64_t all = block == 64 ? ~uint64_t(0) : (uint64_t(1) << block) - 1;
      sum_events_wide(&all, 1, /*ones=*/true, gp + b0 * n, n, nullptr, 0, bias_sum, n, bias_sum);
    }
    for (int64_t t0 = f0; t0 < f1; t0 += 64) {
      const int64_t width = std::min<int64_t>(64, f1 - t0);
      bool ones = true;
      for (int64_t r = 0; r < 64; ++r) {
        bits[r] = r < block ? nonzero_bits(xp + (b0 + r) * f + t0, width, ones) : 0;
      }
      transpose_bits(bits);
      for (int64_t c0 = 0; c0 < n; c0 += kSlice) {
        for (int64_t j = 0; j < width; ++j) {
          if (bits[j] == 0) continue;
          float* sums = wp + (t0 + j) * n + c0;
          sum_events_wide(&bits[j], 1, ones, gp + b0 * n + c0, n, xp + b0 * f + t0 + j, f, sums,
                          std::min(kSlice, n - c0), sums);
        }
      }
    }
  }
}

}  // namespace avx512
#endif

// The kernel for T: the AVX-512 one for float32 where it runs, else the portable one.
template <typename T>
void linear_rows(const T* xp, int64_t f, const T* wp, int64_t n, const T* bp, T* op, int64_t r0,
                 int64_t r1) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx512()) return avx512::spike_linear_rows(xp, f, wp, n, bp, op, r0, r1);
  }
#endif
  spike_linear_rows(xp, f, wp, n, bp, op, r0, r1);
}

template <typename T>
void weight_grad_features(const T* xp, int64_t rows, int64_t f, const T* gp, int64_t n, T* wp,
                          int64_t f0, int64_t f1, T* bias_sum) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx512()) {
      return avx512::spike_weight_grad_features(xp, rows, f, gp, n, wp, f0, f1, bias_sum);
    }
  }
#endif
  spike_weight_grad_features(xp, rows, f, gp, n, wp, f0, f1, bias_sum);
}

// dst [C, R] = src [R, C] transposed, in 32 x 32 tiles. A function of its own with __restrict__
// parameters: inside the dispatch lambda GCC kept the pointers in memory and reloaded them around
// every store (spike_linear of [1, 128] x [128, 128], mostly this transpose: 27.5 us, now 10.3).
template <typename T>
void transpose_tiles(const T* __restrict__ src, T* __restrict__ dst, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
      }
    }
  }
}

// m [R, C] -> contiguous [C, R] (t().contiguous() took 15.6 us on [128, 128] here).
at::Tensor transposed(const at::Tensor& m) {
  const int64_t rows = m.size(0), cols = m.size(1);
  at::Tensor out = empty_output({cols, rows}, m.options());
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "transposed", [&] {
    transpose_tiles(m.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), rows, cols);
  });
  return out;
}

void check_dense_2d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), "snnkernels: ", name, " must be contiguous 2-D, got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "snnkernels: on the CPU ", name, " must be float32 or float64, got ", t.scalar_type());
}

at::Tensor spike_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias) {
  check_dense_2d(x, "x");
  check_dense_2d(weight, "weight");
  TORCH_CHECK(weight.size(1) == x.size(1) && weight.scalar_type() == x.scalar_type(),
              "snnkernels: weight must be [N, F = ", x.size(1), "] of x's dtype, got ", weight.sizes());
  const int64_t rows = x.size(0), f = x.size(1), n = weight.size(0);
  check_bias(bias, n, x);
  at::Tensor out = empty_output({rows, n}, x.options());
  if (out.numel() == 0) return out;
  const at::Tensor wt = transposed(weight);  // [F, N]: the rows the events add
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spike_linear_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* wp = wt.data_ptr<T>();
    const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    // At least 64 rows a task: a second thread first pulls all of wt from the other core's cache
    // (at T = 25, B = 1, [25, 128] x [128, 128]: 26 us on 2 threads against 13 us on one).
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      linear_rows(xp, f, wp, n, bp, op, r0, r1);
    });
  });
  return out;
}

// spike_weight_grad splits the rows into this many parts, each summed into its own [F, N]
// partial, then adds the partials in order. A fixed number, not the thread count, so the bits do
// not depend on the thread count. Two: with the features alone split between threads, each of
// this project's 2 cores read all of grad and x; in bench_tabular's 128 x 2 training step
// (torch profiler, 2 threads, [6400, 128] at 17.6%) the call took 0.45-0.48 ms instead of
// 0.69-0.70 (four parts 0.47-0.52, eight 0.50-0.69).
constexpr int64_t kWeightGradParts = 2;

// Rows per part: whole 64-row tiles (the AVX-512 kernel's block).
int64_t weight_grad_part_rows(int64_t rows) {
  return std::max<int64_t>(64, ((rows + kWeightGradParts - 1) / kWeightGradParts + 63) / 64 * 64);
}

// dst[0, len) += src[0, len), in parallel (a function of its own so GCC vectorizes it).
template <typename T>
void add_onto(T* __restrict__ dst, const T* __restrict__ src, int64_t len) {
  at::parallel_for(0, len, 4096, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) dst[i] += src[i];
  });
}

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
  // grad_wt, the others into `more`. (Two allocations: zeroing one [parts, F, N] of 128 KiB at
  // 128 x 128, glibc's mmap threshold, took 65 us in the training step; two of 64 KiB do not.)
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
  return {transposed(grad_wt), grad_bias};
}

}  // namespace

double event_max_density(at::ScalarType dtype) {
  return dtype == at::kFloat && use_avx512() ? kEventMaxDensityAvx512 : kEventMaxDensityPortable;
}

namespace {

// The nonzeros of n <= 2^31 values given as their bits: a value is zero (+0 or -0) when its bits
// without the sign bit are 0. Integer compares and a 32-bit count vectorize in every clone (the
// float compare into a 64-bit count did not: 0.083 ms on [6400, 128] at 17.5%, now 0.028).
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
// part of x), and runs in parallel otherwise: torch.count_nonzero took 4 ms on [6400, 512],
// as long as the GEMM it was deciding about.
bool event_driven(const at::Tensor& x) {
  if (!x.is_cpu() || x.numel() == 0 || !at::isFloatingType(x.scalar_type())) return false;
  const at::Tensor xc = x.contiguous();
  const int64_t numel = xc.numel();
  const auto limit =
      static_cast<int64_t>(event_max_density(xc.scalar_type()) * static_cast<double>(numel));
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
