// TopK's selection steps for float32 keys with AVX-512 (topk_select.h): compaction by
// vpcompressd, the pick and, for larger k, the lower bound by vector compares instead of the
// portable branches and histogram. Same candidates and picks as the portable steps, so the same
// bits.
#if defined(__x86_64__)
#include "simd.h"
#include "topk_select.h"

namespace snnkernels {
namespace cpu {
namespace {

// The portable compaction, nth_element and tie scan (mispredicted branches) were most of the
// selection's time; here each is a few vector compares per 16 keys.
struct Avx512Steps {
  static constexpr bool kCountedBound = true;
  // 16 keys per compare; the kept lanes are packed by vpcompressd and stored as full vectors.
  __attribute__((target("avx512f"))) static int64_t compact(const uint32_t* key, int64_t n,
                                                            uint32_t bound, int32_t* cand,
                                                            uint32_t* cand_keys) {
    const __m512i b = _mm512_set1_epi32(static_cast<int>(bound));
    const __m512i step = _mm512_set1_epi32(16);
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t count = 0;
    for (int64_t i = 0; i < n; i += 16) {
      const __m512i kv = _mm512_maskz_loadu_epi32(lanes_below(n - i), key + i);
      const __mmask16 keep = _mm512_mask_cmpge_epu32_mask(lanes_below(n - i), kv, b);
      _mm512_storeu_si512(cand + count, _mm512_maskz_compress_epi32(keep, index));
      _mm512_storeu_si512(cand_keys + count, _mm512_maskz_compress_epi32(keep, kv));
      count += __builtin_popcount(keep);
      index = _mm512_add_epi32(index, step);
    }
    return count;
  }

  // Candidate c is taken when fewer than k candidates outrank it: rank = #(key > key_c) +
  // #(key == key_c among the earlier candidates), counted with vector compares against all
  // candidates (up to kMaxVecs * 16 of them; more fall back to the portable pick).
  __attribute__((target("avx512f"))) static void pick(const int32_t* cand,
                                                      const uint32_t* cand_keys,
                                                      int64_t count, int64_t k, int32_t* idx,
                                                      uint32_t* scratch) {
    constexpr int64_t kMaxVecs = 8;
    const int64_t vecs = (count + 15) / 16;
    if (vecs > kMaxVecs) return PortableSteps::pick(cand, cand_keys, count, k, idx, scratch);
    __m512i keys[kMaxVecs];
    for (int64_t v = 0; v < vecs; ++v) {
      keys[v] = _mm512_maskz_loadu_epi32(lanes_below(count - v * 16), cand_keys + v * 16);
    }
    int64_t j = 0;
    for (int64_t c = 0; c < count; ++c) {
      const __m512i kc = _mm512_set1_epi32(static_cast<int>(cand_keys[c]));
      int64_t rank = 0;
      for (int64_t v = 0; v < vecs; ++v) {
        const __mmask16 gt = _mm512_mask_cmpgt_epu32_mask(lanes_below(count - v * 16), keys[v], kc);
        const __mmask16 tie = _mm512_mask_cmpeq_epu32_mask(lanes_below(c - v * 16), keys[v], kc);
        rank += __builtin_popcount(gt) + __builtin_popcount(tie);
      }
      idx[j] = cand[c];
      j += rank < k;
    }
  }

  // Step 1 for larger k (instead of the portable histogram, whose scattered increments were
  // most of the selection's time): a lower bound found by
  // counting keys >= L with vector compares. L walks down from the largest key's power of two,
  // one power at a time, to the first with at least k keys at or above it; then bisects between
  // it and the last power with fewer, until at most kEnough keys (or ties alone) remain.
  static constexpr int64_t kEnough = 48;
  // top: the largest key.
  __attribute__((target("avx512f"))) static uint32_t counted_bound(const uint32_t* key,
                                                                   int64_t n, int64_t k,
                                                                   uint64_t top) {
    constexpr uint64_t kOneExponent = 1u << 23;
    uint64_t hi = top + 1;  // fewer than k keys >= hi
    uint64_t lo = top & ~(kOneExponent - 1);
    int64_t at_lo = count_at_least(key, n, lo);
    while (at_lo < k) {  // lo > 0 here: all n >= k keys are >= 0
      hi = lo;
      lo -= kOneExponent;
      at_lo = count_at_least(key, n, lo);
    }
    while (at_lo > std::max(kEnough, k) && hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      const int64_t at_mid = count_at_least(key, n, mid);
      if (at_mid >= k) {
        lo = mid;
        at_lo = at_mid;
      } else {
        hi = mid;
      }
    }
    return static_cast<uint32_t>(lo);
  }

  __attribute__((target("avx512f"))) static int64_t count_at_least(const uint32_t* key,
                                                                   int64_t n, uint64_t bound) {
    const __m512i b = _mm512_set1_epi32(static_cast<int>(bound));
    int64_t count = 0;
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 valid = lanes_below(n - i);
      count += __builtin_popcount(
          _mm512_mask_cmpge_epu32_mask(valid, _mm512_maskz_loadu_epi32(valid, key + i), b));
    }
    return count;
  }
};

}  // namespace

__attribute__((target("avx512f"))) void select_topk_avx512(TopKSelector<float>& s,
                                                             const float* g, int64_t n,
                                                             int64_t k, int32_t* idx) {
  s.template select<Avx512Steps>(g, n, k, idx);
}

}  // namespace cpu
}  // namespace snnkernels
#endif
