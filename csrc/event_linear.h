// When linear_lif runs its synapse event-driven (cpu/spike_linear_cpu.cpp) instead of as GEMMs:
// on the CPU, when at most this fraction of x's entries is nonzero. The kernels' float32 AVX-512
// path and their portable path (float64, or a CPU without AVX-512, or SNNKERNELS_PORTABLE set:
// cpu/avx512.h) cross over with the GEMMs at different densities; both are measured on this
// project's 2-core CPU in benchmarks/results/event_cpu*.md (benchmarks/bench_event.py). Python
// reads the values through build_info().
#pragma once

#include <ATen/ATen.h>

namespace snnkernels {

// AVX-512 (measured crossovers: 0.2 at 1024 x 1024, 0.3 at 512 x 512, >= 0.5 at 128 x 128).
constexpr double kEventMaxDensityAvx512 = 0.2;
// Portable (measured crossovers: 0.05 at 1024 and 512 wide, 0.02 at 128).
constexpr double kEventMaxDensityPortable = 0.05;
// The one in effect for x of this dtype in this process.
double event_max_density(at::ScalarType dtype);

// ... and only for layers of at least this many neurons: the crossovers were measured at 128,
// 512 and 1024 wide; into 16 and 2 neurons (x [6400, 128]) the GEMMs won at every rate from
// 0.5% to 50%, with the AVX-512 kernels too (at 5% and 2 neurons: forward 0.14 vs 0.15 ms, but
// the weight gradient 0.25 vs 0.08 ms). (Layers of at most 4 neurons now run narrow_linear.h's
// row loops instead of either.)
constexpr int64_t kEventMinWidth = 128;

// The rule for x: on the CPU, floating point, non-empty, with at most event_max_density of its
// entries nonzero (cpu/spike_linear_cpu.cpp; also the op snnkernels::event_driven).
bool event_driven(const at::Tensor& x);

// The rule for a layer of `neurons` outputs on x: the width, then event_driven(x).
inline bool event_driven_layer(const at::Tensor& x, int64_t neurons) {
  return neurons >= kEventMinWidth && event_driven(x);
}

}  // namespace snnkernels
