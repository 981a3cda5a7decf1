// A test-only switch: when on, kernels fill their outputs with NaN before writing them.
#pragma once

namespace snnkernels {
bool debug_poison_enabled();
}
