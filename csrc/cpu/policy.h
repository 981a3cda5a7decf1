// Every threshold by which the CPU kernels choose a path or size their work. Each default was
// measured on the project's development CPU (benchmarks/results/tuning.md, event_cpu*.md) and can
// be overridden by the environment variable named with it, read once per process; a malformed
// value raises an error that names the variable. The chunk and task sizes never change results;
// the synapse paths change only the order of a sum.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>

namespace snnkernels {
namespace cpu {

// Environment variable `name` as a number in [lo, hi]; `fallback` when unset or empty.
inline double env_number(const char* name, double fallback, double lo, double hi) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const double value = std::strtod(env, &end);
  TORCH_CHECK(end != env && *end == '\0' && value >= lo && value <= hi, "snnkernels: ", name,
              " must be a number in [", lo, ", ", hi, "], got '", env, "'");
  return value;
}

inline int64_t env_count(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const double value = env_number(name, static_cast<double>(fallback), static_cast<double>(lo),
                                  static_cast<double>(hi));
  TORCH_CHECK(value == static_cast<double>(static_cast<int64_t>(value)), "snnkernels: ", name,
              " must be a whole number, got '", std::getenv(name), "'");
  return static_cast<int64_t>(value);
}

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
// for the portable ones. SNNKERNELS_EVENT_MAX_DENSITY (one value for both; 0 turns it off).
inline double event_max_density(at::ScalarType dtype) {
  static const double avx512 = env_number("SNNKERNELS_EVENT_MAX_DENSITY", 0.2, 0.0, 1.0);
  static const double portable = env_number("SNNKERNELS_EVENT_MAX_DENSITY", 0.05, 0.0, 1.0);
  return dtype == at::kFloat && use_avx512() ? avx512 : portable;
}

// ... and only into layers of at least this many neurons: into narrower ones the GEMMs won at
// every density measured. SNNKERNELS_EVENT_MIN_WIDTH.
inline int64_t event_min_width() {
  static const int64_t width = env_count("SNNKERNELS_EVENT_MIN_WIDTH", 128, 1, INT64_MAX);
  return width;
}

// linear_lif's synapse for layers of at most this many neurons (a classifier readout) runs as
// row loops (narrow_linear_cpu.cpp): with N = 2 the GEMMs' blocking has nothing to work on.
// SNNKERNELS_NARROW_MAX_WIDTH (0 turns it off; at most 4, the widths the loops are built for).
inline int64_t narrow_max_width() {
  static const int64_t width = env_count("SNNKERNELS_NARROW_MAX_WIDTH", 4, 0, 4);
  return width;
}

// The LIF forward rows run their AVX2 build (simd.h: SNN_CLONES_AVX2) while a call's [T, M]
// tensors take at most this many bytes, the baseline build above: once the rows stream from
// memory the baseline measured faster. SNNKERNELS_AVX2_MAX_BYTES.
inline int64_t avx2_max_bytes() {
  static const int64_t bytes =
      env_count("SNNKERNELS_AVX2_MAX_BYTES", int64_t(32) << 20, 0, INT64_MAX);
  return bytes;
}

// Neurons per chunk of the LIF kernels, at most: a chunk's state stays in L1 while the [T, M]
// tensors stream past in runs long enough for the prefetcher. SNNKERNELS_CHUNK_NEURONS.
inline int64_t max_chunk() {
  static const int64_t neurons = env_count("SNNKERNELS_CHUNK_NEURONS", 2048, 64, INT64_MAX);
  return neurons;
}

// The same for the masked backward, whose chunks hold whole rows: with rows of 1024, 2048-neuron
// chunks measured slower than 8192. SNNKERNELS_MASKED_CHUNK_NEURONS.
inline int64_t max_masked_chunk() {
  static const int64_t neurons =
      env_count("SNNKERNELS_MASKED_CHUNK_NEURONS", 8192, 64, INT64_MAX);
  return neurons;
}

// Bytes of per-task arrays in lif_constant's backward (a chunk's recomputed trajectory): small
// enough to stay in L1 while the upstream gradient streams in. SNNKERNELS_CONSTANT_TASK_BYTES.
inline int64_t constant_task_bytes() {
  static const int64_t bytes =
      env_count("SNNKERNELS_CONSTANT_TASK_BYTES", int64_t(32) << 10, 1, INT64_MAX);
  return bytes;
}

// spike_weight_grad sums each of this many row ranges into its own partial (then adds them in
// order): a fixed number, not the thread count, so the bits do not depend on the thread count;
// with one range each core read all of x and grad. SNNKERNELS_WEIGHT_GRAD_PARTS.
inline int64_t weight_grad_parts() {
  static const int64_t parts = env_count("SNNKERNELS_WEIGHT_GRAD_PARTS", 2, 1, 1024);
  return parts;
}

// TopK selection bounds the k-th largest |g| by block maxima when k * this <= N (cheap for small
// k), else by a histogram or counted bound. SNNKERNELS_TOPK_BLOCK_RATIO.
inline int64_t topk_block_ratio() {
  static const int64_t ratio = env_count("SNNKERNELS_TOPK_BLOCK_RATIO", 32, 1, INT64_MAX);
  return ratio;
}

// linear_sparse_backward's weight gradient scatters each entry onto its row in x's row order
// while grad_weight takes at most this many bytes (it stays in L2), else gathers each row from
// the entries sorted by neuron. SNNKERNELS_SPARSE_SCATTER_MAX_BYTES.
inline int64_t scatter_max_bytes() {
  static const int64_t bytes =
      env_count("SNNKERNELS_SPARSE_SCATTER_MAX_BYTES", int64_t(1) << 20, 0, INT64_MAX);
  return bytes;
}

// CPU outputs of at least this many bytes come from the output cache (output_pool.h); smaller
// ones are cheap to fault in. SNNKERNELS_CPU_CACHE_MIN_BYTES.
inline int64_t pool_min_bytes() {
  static const int64_t bytes =
      env_count("SNNKERNELS_CPU_CACHE_MIN_BYTES", int64_t(1) << 20, 0, INT64_MAX);
  return bytes;
}

// The output cache's cap on the free buffers it keeps (0: none, every output from torch's
// allocator). SNNKERNELS_CPU_CACHE_MB, in MiB; cpu_cache.set_limit changes it at run time.
inline int64_t pool_default_limit_bytes() {
  return env_count("SNNKERNELS_CPU_CACHE_MB", 1024, 0, int64_t(1) << 40) << 20;
}

}  // namespace cpu
}  // namespace snnkernels
