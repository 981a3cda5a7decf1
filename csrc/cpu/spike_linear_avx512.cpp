// The event-driven synapse's float32 kernels with AVX-512 (spike_linear_cpu.cpp), taken where
// cpu::use_avx512() (policy.h).
#if defined(__x86_64__)
#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace snnkernels {
// float32 with AVX-512: the same sums in the same order, so the same bits (each term v * w is
// rounded, then added onto the running sum; for v == 1 the term is w itself). What differs: the
// nonzeros of x are found as bit masks (16 compares at a time, no branch per entry), and the
// running sums of kSlice outputs at a time stay in registers (benchmarks/results/event_cpu.md).
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
  // Two arrays of at most 4: GCC 12 kept a single array of 8 on the stack as well, and stored it
  // at every event.
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
}  // namespace snnkernels
#endif
