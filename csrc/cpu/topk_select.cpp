// The TopK selection's entry points (topk_select.h): the portable steps compiled for AVX-512,
// AVX2 and the baseline, picked at load time (integer max and compares are emulated in baseline
// SSE2), and for float32 the AVX-512 steps where cpu::use_avx512().
#include "simd.h"
#include "topk_select.h"

namespace snnkernels {
namespace cpu {
namespace {

SNN_CLONES void select_topk_portable(TopKSelector<float>& s, const float* g, int64_t n,
                                     int64_t k, int32_t* idx) {
  s.template select<PortableSteps>(g, n, k, idx);
}

}  // namespace

SNN_CLONES void select_topk(TopKSelector<double>& s, const double* g, int64_t n, int64_t k,
                            int32_t* idx) {
  s.template select<PortableSteps>(g, n, k, idx);
}

void select_topk(TopKSelector<float>& s, const float* g, int64_t n, int64_t k, int32_t* idx) {
#if defined(__x86_64__)
  if (use_avx512()) return select_topk_avx512(s, g, n, k, idx);
#endif
  select_topk_portable(s, g, n, k, idx);
}

}  // namespace cpu
}  // namespace snnkernels
