// When linear_lif runs its synapse event-driven (cpu/spike_linear_cpu.cpp) instead of as GEMMs:
// on the CPU, when at most this fraction of x's entries is nonzero. The crossover of the two
// paths on this project's 2-core CPU is in benchmarks/results/event_cpu.md
// (benchmarks/bench_event.py); Python reads the value through build_info().
#pragma once

namespace snnkernels {

constexpr double kEventMaxDensity = 0.05;

}  // namespace snnkernels
