// When linear_lif runs its synapse event-driven (cpu/spike_linear_cpu.cpp) instead of as GEMMs:
// on the CPU, when at most this fraction of x's entries is nonzero. The crossover of the two
// paths on this project's 2-core CPU is in benchmarks/results/event_cpu.md
// (benchmarks/bench_event.py); Python reads the value through build_info().
#pragma once

#include <ATen/ATen.h>

namespace snnkernels {

constexpr double kEventMaxDensity = 0.05;

// The rule: x on the CPU, floating point, non-empty, with at most kEventMaxDensity of its
// entries nonzero (cpu/spike_linear_cpu.cpp; also the op snnkernels::event_driven).
bool event_driven(const at::Tensor& x);

}  // namespace snnkernels
