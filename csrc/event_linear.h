// When linear_lif runs its synapse event-driven (cpu/spike_linear_cpu.cpp) instead of as GEMMs:
// on the CPU, when at most this fraction of x's entries is nonzero. The crossover of the two
// paths on this project's 2-core CPU is in benchmarks/results/event_cpu.md
// (benchmarks/bench_event.py); Python reads the value through build_info().
#pragma once

#include <ATen/ATen.h>

namespace snnkernels {

constexpr double kEventMaxDensity = 0.05;
// ... and only for layers of at least this many neurons: the crossovers were measured at 128,
// 512 and 1024 wide; for TabularSNN's 2-neuron readout (x [6400, 128], 4.5% spikes) the event
// path took 0.78 ms forward and 0.62 ms for the weight gradient, the GEMMs 0.19 and 0.07 ms.
constexpr int64_t kEventMinWidth = 128;

// The rule for x: on the CPU, floating point, non-empty, with at most kEventMaxDensity of its
// entries nonzero (cpu/spike_linear_cpu.cpp; also the op snnkernels::event_driven).
bool event_driven(const at::Tensor& x);

// The rule for a layer of `neurons` outputs on x: the width, then event_driven(x).
inline bool event_driven_layer(const at::Tensor& x, int64_t neurons) {
  return neurons >= kEventMinWidth && event_driven(x);
}

}  // namespace snnkernels
