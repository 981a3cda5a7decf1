// linear_lif_forward's LIF on the CPU (lif_cpu.cpp): the membrane is written over the synaptic
// current, a buffer linear_lif made and does not need again, so each value is read and written
// in the same cache line instead of filling a second [T, B * N] buffer.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace snnkernels {

// lif_forward(x, mem0=None, ...) for a contiguous [T, M] x on the CPU, returning (spk, mem,
// pre) with mem = x (its values replaced by the membrane's): the same bits as lif_forward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_forward_cpu_in_place(
    const at::Tensor& x, const at::Tensor& beta, const at::Tensor& threshold,
    const at::Tensor& graded, int64_t reset, bool reset_delay);

}  // namespace snnkernels
