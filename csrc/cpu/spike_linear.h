// The event-driven synapse (spike_linear_cpu.cpp): x W^T and its weight gradient computed over
// the nonzeros of a mostly-zero x (spikes), and the rule by which linear_lif takes it.
#pragma once

#include <ATen/ATen.h>

#include "policy.h"

namespace snnkernels {

// The rule for x: on the CPU, floating point, non-empty, with at most
// cpu::event_max_density(dtype) of its entries nonzero (also the op snnkernels::event_driven).
bool event_driven(const at::Tensor& x);

// The rule for a layer of `neurons` outputs on x: the width, then event_driven(x).
inline bool event_driven_layer(const at::Tensor& x, int64_t neurons) {
  return neurons >= cpu::event_min_width() && event_driven(x);
}

}  // namespace snnkernels
