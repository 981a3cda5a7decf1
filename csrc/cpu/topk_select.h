// TopK's selection on the CPU (lif_cpu.cpp's masked backward): the k entries of a row with the
// largest |g|, ties to the lower index, as ascending indices. Portable steps here; the float32
// AVX-512 steps in topk_select_avx512.cpp, taken where cpu::use_avx512() (policy.h). Both give
// the same bits (tests/sparse/test_topk_selection.py).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../lif_math.h"
#include "policy.h"

namespace snnkernels {
namespace cpu {

// Steps 2 and 3 of the selection below (TopKSelector::select), portable and with AVX-512.
// compact: the indices of the keys >= bound, ascending, into cand, and their keys into
// cand_keys; returns how many (both may be written up to kCompactSlack slots past the count).
// pick: the k candidates of largest key (ties: lower index) into idx, ascending (idx needs room
// for k + 1: the branch-free stores write one past the last).
constexpr int64_t kCompactSlack = 16;

struct PortableSteps {
  static constexpr bool kCountedBound = false;
  template <typename Key>
  static int64_t compact(const Key* key, int64_t n, Key bound, int32_t* cand, Key* cand_keys) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {  // branch-free: always write, advance when kept
      cand[count] = static_cast<int32_t>(i);
      count += key[i] >= bound;
    }
    for (int64_t c = 0; c < count; ++c) cand_keys[c] = key[cand[c]];
    return count;
  }

  // tau = the k-th largest candidate key (nth_element on a copy), then one scan in index order
  // takes the keys > tau and the first ties == tau.
  template <typename Key>
  static void pick(const int32_t* cand, const Key* cand_keys, int64_t count, int64_t k,
                   int32_t* idx, Key* scratch) {
    std::copy_n(cand_keys, count, scratch);
    std::nth_element(scratch, scratch + (count - k), scratch + count);
    const Key tau = scratch[count - k];
    int64_t ties = k;  // how many keys equal to tau to take
    for (int64_t c = count - k; c < count; ++c) ties -= scratch[c] > tau;
    int64_t j = 0;
    for (int64_t c = 0; c < count; ++c) {
      const Key kc = cand_keys[c];
      const bool take = kc > tau || (kc == tau && ties > 0);
      ties -= take && kc == tau;
      idx[j] = cand[c];
      j += take;
    }
  }
};


// Selects the k entries of a row with the largest |g| (ties: lower index), as ascending indices.
// Magnitudes are compared as the integer bits of |g| (same order for non-negative floats).
// 1. A lower bound L on the k-th largest key, such that at least k keys are >= L:
//    small k (k * topk_block_ratio() <= n): split the row into k blocks; their k maxima are k
//    distinct entries, so L = the smallest block maximum (vectorizable max loops);
//    larger k: a histogram of the keys' top 12 bits (sign, exponent, 3 mantissa bits); L = the
//    start of the bin that holds the k-th largest key (Avx512Steps: counted_bound instead).
// 2. The candidates (key >= L, compacted in index order) are usually a small multiple of k.
// 3. The k of them with the largest keys (ties: lower index), kept in index order.
// (std::nth_element on the whole row measured several times slower; which bound is cheaper
// depends on k / n: policy.h, topk_block_ratio.)
template <typename T>
class TopKSelector {
 public:
  using Key = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

  // The candidate buffers have kCompactSlack spare slots for the compaction's full-vector stores.
  explicit TopKSelector(int64_t n)
      : keys_(n), cand_(n + kCompactSlack), cand_keys_(n + kCompactSlack), pick_scratch_(n),
        hist_(2048) {}

  // idx must have room for k + 1 entries. Steps: PortableSteps or Avx512Steps.
  template <typename Steps>
  inline __attribute__((always_inline)) void select(const T* g, int64_t n, int64_t k,
                                                    int32_t* idx) {
    if (k >= n) {
      for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
      return;
    }
    Key* key = keys_.data();
    for (int64_t i = 0; i < n; ++i) key[i] = rank_key(g[i]);
    Key bound;
    if (k * topk_block_ratio() <= n) {
      bound = block_bound(key, n, k);
    } else if constexpr (Steps::kCountedBound) {
      bound = Steps::counted_bound(key, n, k, block_max(key, n));
    } else {
      bound = histogram_bound(key, n, k);
    }
    const int64_t count = Steps::compact(key, n, bound, cand_.data(), cand_keys_.data());
    Steps::pick(cand_.data(), cand_keys_.data(), count, k, idx, pick_scratch_.data());
  }

 private:
  // |v| as TopK ranks it, as an unsigned integer of the same order; NaN ranks as +inf
  // (torch.sort puts NaN first in descending order). |v| is taken by clearing the sign bit:
  // math_abs(-0.0) is -0.0, whose key (sign bit set) outranked every other entry and indexed
  // past the end of the histogram (found by tests/test_hardening_properties.py).
  static Key rank_key(T v) { return topk_rank_key(v); }

  static Key block_bound(const Key* key, int64_t n, int64_t k) {
    const int64_t block = n / k;
    Key bound = std::numeric_limits<Key>::max();
    for (int64_t b = 0; b < k; ++b) bound = std::min(bound, block_max(key + b * block, block));
    return bound;
  }

  // The walk down the bins starts at the largest key's bin, not at the top one: gradients are
  // small numbers, so starting at bin 2047 walked ~1000 empty bins per row (most of the
  // selection's time at N = 512). The histogram is left zeroed for the next row by clearing
  // the bins this row touched, not all 2048.
  Key histogram_bound(const Key* key, int64_t n, int64_t k) {
    constexpr int kShift = int(sizeof(Key)) * 8 - 12;  // 2048 bins: the sign bit is 0
    Key top = 0;
    for (int64_t i = 0; i < n; ++i) {
      ++hist_[key[i] >> kShift];
      top = key[i] > top ? key[i] : top;
    }
    int64_t above = 0;  // keys in the bins above `bin`
    Key bin = top >> kShift;
    while (above + hist_[bin] < k) above += hist_[bin--];
    for (int64_t i = 0; i < n; ++i) hist_[key[i] >> kShift] = 0;
    return bin << kShift;
  }

  static Key block_max(const Key* __restrict__ key, int64_t len) {
    Key m = 0;
    for (int64_t i = 0; i < len; ++i) m = key[i] > m ? key[i] : m;
    return m;
  }

  std::vector<Key> keys_;
  std::vector<int32_t> cand_;
  std::vector<Key> cand_keys_;
  std::vector<Key> pick_scratch_;
  std::vector<int64_t> hist_;
};


// The selection of the k of n entries of g (idx: room for k + 1), topk_select.cpp.
void select_topk(TopKSelector<float>& s, const float* g, int64_t n, int64_t k, int32_t* idx);
void select_topk(TopKSelector<double>& s, const double* g, int64_t n, int64_t k, int32_t* idx);
#if defined(__x86_64__)
__attribute__((target("avx512f"))) void select_topk_avx512(  // topk_select_avx512.cpp
    TopKSelector<float>& s, const float* g, int64_t n, int64_t k, int32_t* idx);
#endif

}  // namespace cpu
}  // namespace snnkernels
