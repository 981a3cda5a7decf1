// Vector-ISA tools of the CPU kernels: the attributes that compile a loop for several ISAs (the
// version picked at load time), and the AVX-512 tail masks. Whether the hand-written AVX-512
// kernels run at all is cpu::use_avx512() (policy.h).
#pragma once

#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "policy.h"

namespace snnkernels {

// A function compiled for AVX-512, AVX2 and the baseline (SSE2), the version picked at load time
// (GCC function multi-versioning; on templates, per instantiation), for the loops GCC vectorizes
// itself where that measured faster. With -ffp-contract=off every version does the same IEEE
// operations per element, so the same bits.
#if defined(__x86_64__)
#define SNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SNN_CLONES
#endif

#if defined(__x86_64__)
// The lanes [0, n) of a 16-lane mask (all for n >= 16, none for n <= 0).
inline __mmask16 lanes_below(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
#endif

}  // namespace snnkernels
