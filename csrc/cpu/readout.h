// A LIF layer whose spikes feed a narrow readout layer (weight w [C, H], M = B * H neurons (b, h)),
// the two run together on the CPU (snnkernels/_readout.py):
// - forward (linear_lif_readout_forward, linear_lif.cpp): the readout's current is summed from
//   each step's spikes while they are in cache (ReadoutCurrent, lif_cpu.cpp's forward kernel);
// - backward (lif_backward_readout, cpu/lif_readout_cpu.cpp): the spikes' gradient is formed a
//   row at a time from the readout's current gradient g [T * B, C] and w instead of read from a
//   [T, M] tensor (ReadoutGrad; the dense body in lif_cpu.cpp, the masked one in
//   lif_masked_cpu.cpp, both filling it with readout_grad_row).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <tuple>

#include "avx512.h"

namespace snnkernels {
namespace cpu {

template <typename T>
struct ReadoutCurrent {
  const T* w;     // [C, H]
  const T* bias;  // [C] or null
  int64_t classes;
  int64_t hidden;
  T* out;  // [T * B, C]
};

template <typename T>
struct ReadoutGrad {
  const T* g;  // [T * B, C]
  const T* w;  // [C, H]
  int64_t classes;
  int64_t hidden;
};

// out[0, len) = the spikes' gradient of neurons [n0, n0 + len) at one step, from that step's
// rows g [B, C] of the readout's current gradient: for neuron (b, h), g[b, 0] * w[0, h] +
// g[b, 1] * w[1, h] + ..., added in that order (the bits of linear_dense_backward's grad_x for
// the readout, narrow_linear_cpu.cpp). Built for AVX-512, AVX2 and the baseline (avx512.h; in
// the dense op alone, [25, 32768] with C = 2 on one thread, the AVX-512 build took 0.50 ms
// against the AVX2 build's 0.53).
template <typename T>
SNN_CLONES void readout_grad_row(const T* __restrict__ g, const T* __restrict__ w,
                                 int64_t classes, int64_t hidden, int64_t n0, int64_t len,
                                 T* __restrict__ out) {
  int64_t b = n0 / hidden, h0 = n0 % hidden;
  for (int64_t done = 0; done < len; ++b, h0 = 0) {
    const int64_t run = std::min(hidden - h0, len - done);
    const T* gb = g + b * classes;
    T* o = out + done;
    const T* w0 = w + h0;
    for (int64_t i = 0; i < run; ++i) o[i] = gb[0] * w0[i];
    for (int64_t c = 1; c < classes; ++c) {
      const T* wc = w + c * hidden + h0;
      for (int64_t i = 0; i < run; ++i) o[i] += gb[c] * wc[i];
    }
    done += run;
  }
}

// Step t's row of the spikes' gradient, neurons [n0, n0 + len) of m.
template <typename T>
void fill_readout_grad(const ReadoutGrad<T>& ro, int64_t t, int64_t m, int64_t n0, int64_t len,
                       T* out) {
  readout_grad_row(ro.g + t * (m / ro.hidden) * ro.classes, ro.w, ro.classes, ro.hidden, n0,
                   len, out);
}

// lif_forward in place (lif_forward_in_place.h) that also returns the readout's current
// [T * B, C]: narrow_linear.h's sums (the bits of narrow_linear_cpu) of each step's spikes.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_forward_in_place_with_readout(
    const at::Tensor& x, const at::Tensor& beta, const at::Tensor& threshold,
    const at::Tensor& graded, int64_t reset, bool reset_delay, const at::Tensor& readout_weight,
    const c10::optional<at::Tensor>& readout_bias);

// The bodies, arguments as lif_backward_readout's (checked by it) minus the mask's; the dense
// one returns (grad_x, grad_beta, grad_threshold, grad_graded), the masked one (always compact)
// also (values, indices, row_ptr), as lif_backward_masked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_backward_with_readout(
    const at::Tensor& readout_grad, const at::Tensor& readout_weight,
    const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem, const at::Tensor& pre_reset,
    const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
    int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay, bool param_grads);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lif_backward_masked_with_readout(
    const at::Tensor& readout_grad, const at::Tensor& readout_weight,
    const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem, const at::Tensor& pre_reset,
    const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
    int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay, bool param_grads,
    int64_t mask, int64_t row, int64_t k, double width, bool temporal);

}  // namespace cpu
}  // namespace snnkernels
