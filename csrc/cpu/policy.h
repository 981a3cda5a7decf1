// Every threshold by which the CPU kernels choose a path or size their work. Each default was
// measured on the project's development CPU (benchmarks/results/tuning.md, event_cpu*.md) and can
// be overridden by the environment variable named with it, read once per process (import reads
// them all through build_info); a malformed value raises an error that names the variable. Chunk
// and task sizes never change results; the synapse paths change only the order of a sum.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>

namespace snnkernels {
namespace cpu {

// Environment variable `name` as a number in [lo, hi] (whole when `whole`); `fallback` when
// unset or empty.
inline double env_number(const char* name, double fallback, double lo, double hi, bool whole) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const double value = std::strtod(env, &end);
  TORCH_CHECK(end != env && *end == '\0' && value >= lo && value <= hi &&
                  (!whole || value == static_cast<double>(static_cast<int64_t>(value))),
              "snnkernels: ", name, " must be a ", whole ? "whole " : "", "number in [", lo, ", ",
              hi, "], got '", env, "'");
  return value;
}

// inline TYPE FN(): the value of environment variable ENV, else FALLBACK, read once.
#define SNN_POLICY(TYPE, FN, ENV, FALLBACK, LO, HI)                                      \
  inline TYPE FN() {                                                                     \
    static const TYPE value = static_cast<TYPE>(env_number(                              \
        ENV, static_cast<double>(FALLBACK), LO, HI, !std::is_floating_point_v<TYPE>)); \
    return value;                                                                        \
  }
constexpr double kNoLimit = 9.0e18;  // below INT64_MAX, as a double

// The float32 AVX-512 kernels (TopK selection, event-driven synapse) run on CPUs with AVX-512F
// unless SNNKERNELS_PORTABLE is set; the portable code gives the same bits.
inline bool use_avx512() {
#if defined(__x86_64__)
  static const bool yes =
      __builtin_cpu_supports("avx512f") && std::getenv("SNNKERNELS_PORTABLE") == nullptr;
  return yes;
#else
  return false;
#endif
}

// linear_lif's synapse runs event-driven (spike_linear_cpu.cpp) instead of as GEMMs when at most
// this fraction of x is nonzero: the crossover with the GEMMs, later for the AVX-512 kernels than
// for the portable ones. One variable sets both; 0 turns the path off.
SNN_POLICY(double, event_max_density_avx512, "SNNKERNELS_EVENT_MAX_DENSITY", 0.2, 0, 1)
SNN_POLICY(double, event_max_density_portable, "SNNKERNELS_EVENT_MAX_DENSITY", 0.05, 0, 1)
inline double event_max_density(at::ScalarType dtype) {
  return dtype == at::kFloat && use_avx512() ? event_max_density_avx512()
                                             : event_max_density_portable();
}

// ... and only into layers of at least this many neurons: into narrower ones the GEMMs won at
// every density measured.
SNN_POLICY(int64_t, event_min_width, "SNNKERNELS_EVENT_MIN_WIDTH", 128, 1, kNoLimit)

// linear_lif's synapse for layers of at most this many neurons (a classifier readout) runs as
// row loops (narrow_linear_cpu.cpp): with N = 2 the GEMMs' blocking has nothing to work on.
// 0 turns them off; at most 4, the widths the loops are built for.
SNN_POLICY(int64_t, narrow_max_width, "SNNKERNELS_NARROW_MAX_WIDTH", 4, 0, 4)

// Neurons per chunk of the LIF kernels, at most: a chunk's state stays in L1 while the [T, M]
// tensors stream past in runs long enough for the prefetcher.
SNN_POLICY(int64_t, max_chunk, "SNNKERNELS_CHUNK_NEURONS", 2048, 64, kNoLimit)

// The same for the masked backward, whose chunks hold whole rows: with rows of 1024, 2048-neuron
// chunks measured slower than 8192.
SNN_POLICY(int64_t, max_masked_chunk, "SNNKERNELS_MASKED_CHUNK_NEURONS", 8192, 64, kNoLimit)

// Bytes of per-task arrays in lif_constant's backward (a chunk's recomputed trajectory): small
// enough to stay in L1 while the upstream gradient streams in.
SNN_POLICY(int64_t, constant_task_bytes, "SNNKERNELS_CONSTANT_TASK_BYTES", 32 << 10, 1, kNoLimit)

// spike_weight_grad sums each of this many row ranges into its own partial, then adds them in
// order: a fixed number, not the thread count, so the bits do not depend on the thread count;
// with one range each core read all of x and grad.
SNN_POLICY(int64_t, weight_grad_parts, "SNNKERNELS_WEIGHT_GRAD_PARTS", 2, 1, 1024)

// TopK's selection bounds the k-th largest |g| by block maxima when k * this <= N (cheap for
// small k), else by a histogram (or with AVX-512 by counting).
SNN_POLICY(int64_t, topk_block_ratio, "SNNKERNELS_TOPK_BLOCK_RATIO", 32, 1, kNoLimit)

// CPU outputs of at least this many bytes come from the output cache (output_pool.h); smaller
// ones are cheap to fault in.
SNN_POLICY(int64_t, pool_min_bytes, "SNNKERNELS_CPU_CACHE_MIN_BYTES", 1 << 20, 0, kNoLimit)

// The output cache's cap on the free buffers it keeps, in MiB (0: none, every output from
// torch's allocator); snnkernels.cpu_cache.set_limit changes it at run time.
SNN_POLICY(int64_t, pool_limit_mib, "SNNKERNELS_CPU_CACHE_MB", 1024, 0, int64_t(1) << 40)

#undef SNN_POLICY

}  // namespace cpu
}  // namespace snnkernels
