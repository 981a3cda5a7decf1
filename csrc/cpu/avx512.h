// What the CPU kernels' AVX-512 paths share: whether to take them, tail masks, and the
// attribute that compiles a loop for AVX-512, AVX2 and the baseline.
// The float32 paths written with AVX-512 intrinsics (the TopK selection in lif_masked_cpu.cpp,
// the event-driven synapse in spike_linear_cpu.cpp) run on CPUs with AVX-512F unless the
// environment variable SNNKERNELS_PORTABLE is set (read once); otherwise the portable code runs.
// Both give the same bits (tests/test_topk_selection.py, tests/test_event_linear.py).
#pragma once

#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace snnkernels {

inline bool use_avx512() {
#if defined(__x86_64__)
  static const bool yes =
      __builtin_cpu_supports("avx512f") && std::getenv("SNNKERNELS_PORTABLE") == nullptr;
  return yes;
#else
  return false;
#endif
}

// A function compiled for AVX-512, AVX2 and the baseline, the version picked at load time (GCC
// function multi-versioning; on templates, per instantiation). The loops that GCC vectorizes
// itself use it where that measured faster (the baseline build is SSE2, 4 floats a vector).
// Without FMA contraction (-ffp-contract=off) every version does the same IEEE operations per
// element, so the same bits.
#if defined(__x86_64__)
#define SNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SNN_CLONES
#endif

// The same for AVX2 and the baseline only: the LIF forward rows, whose AVX-512 clones measured
// slower in the training step than the baseline and slowed the ops after them; the AVX2 ones did
// neither (lif_cpu.cpp, lif_constant_cpu.cpp; used below a size, lif_cpu_common.h).
#if defined(__x86_64__)
#define SNN_CLONES_AVX2 __attribute__((target_clones("avx2", "default")))
#else
#define SNN_CLONES_AVX2
#endif

#if defined(__x86_64__)
// The lanes [0, n) of a 16-lane mask (all for n >= 16, none for n <= 0).
inline __mmask16 lanes_below(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
#endif

}  // namespace snnkernels
