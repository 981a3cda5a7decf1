// Where every kernel's outputs come from, on either device: large CPU outputs from the output
// cache (cpu/output_pool.h), everything else from torch's allocator. Tests turn on debug poison,
// which fills each output with NaN first, so an element a kernel forgets to write shows up.
#pragma once

#include <ATen/ATen.h>

#include <limits>

#include "cpu/output_pool.h"

namespace snnkernels {

bool debug_poison_enabled();  // set_debug_poison (ops.cpp)

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const auto dtype = c10::typeMetaToScalarType(options.dtype());
  const int64_t bytes =
      c10::multiply_integers(sizes) * static_cast<int64_t>(c10::elementSize(dtype));
  at::Tensor out = options.device().is_cpu() && pool_takes(bytes)
                       ? pooled_empty(sizes, options)
                       : at::empty(sizes, options);
  if (debug_poison_enabled()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

}  // namespace snnkernels
