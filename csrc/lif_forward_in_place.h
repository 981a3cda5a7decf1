// linear_lif_forward's LIF on the CPU: the membrane is written over the synaptic current, a
// buffer linear_lif made and does not need again (cpu/lif_cpu.cpp). Reading each current and
// writing its membrane into the same cache line, instead of into a second [T, B * N] buffer,
// took the 128 x 2 training step's layer-2 LIF forward (bench_tabular, [25, 32768] float32,
// torch profiler) from 0.33-0.35 ms to 0.23-0.24 ms.
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
