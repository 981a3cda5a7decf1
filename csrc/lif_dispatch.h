// Turns the runtime (surrogate, reset, reset_delay, mask) choice into template arguments once,
// outside every loop, for both the CPU and the CUDA kernels.
#pragma once

#include <c10/util/Exception.h>

#include "lif_math.h"

namespace snnkernels {

// Calls f(std::integral_constant<Reset, R>{}, std::bool_constant<D>{}).
template <typename F>
void dispatch_reset(int64_t reset, bool reset_delay, F&& f) {
  auto with_delay = [&](auto r) {
    if (reset_delay) {
      f(r, std::true_type{});
    } else {
      f(r, std::false_type{});
    }
  };
  switch (static_cast<Reset>(reset)) {
    case Reset::Subtract:
      return with_delay(std::integral_constant<Reset, Reset::Subtract>{});
    case Reset::Zero:
      return with_delay(std::integral_constant<Reset, Reset::Zero>{});
    case Reset::None:
      return with_delay(std::integral_constant<Reset, Reset::None>{});
  }
  TORCH_CHECK(false, "snnkernels: unknown reset id ", reset);
}

// Calls f(std::integral_constant<Surrogate, S>{}).
template <typename F>
void dispatch_surrogate(int64_t surrogate, F&& f) {
  switch (static_cast<Surrogate>(surrogate)) {
    case Surrogate::ATan:
      return f(std::integral_constant<Surrogate, Surrogate::ATan>{});
    case Surrogate::FastSigmoid:
      return f(std::integral_constant<Surrogate, Surrogate::FastSigmoid>{});
    case Surrogate::Sigmoid:
      return f(std::integral_constant<Surrogate, Surrogate::Sigmoid>{});
    case Surrogate::SpikeRateEscape:
      return f(std::integral_constant<Surrogate, Surrogate::SpikeRateEscape>{});
    case Surrogate::Triangular:
      return f(std::integral_constant<Surrogate, Surrogate::Triangular>{});
    case Surrogate::StraightThrough:
      return f(std::integral_constant<Surrogate, Surrogate::StraightThrough>{});
    case Surrogate::Heaviside:
      return f(std::integral_constant<Surrogate, Surrogate::Heaviside>{});
  }
  TORCH_CHECK(false, "snnkernels: unknown surrogate id ", surrogate);
}

// The LIF backward's choices: calls f(s, r, delay, param_grads), each a compile-time constant
// (param_grads as std::bool_constant).
template <typename F>
void dispatch_backward(int64_t surrogate, int64_t reset, bool reset_delay, bool param_grads,
                       F&& f) {
  dispatch_surrogate(surrogate, [&](auto s) {
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      if (param_grads) {
        f(s, r, delay, std::true_type{});
      } else {
        f(s, r, delay, std::false_type{});
      }
    });
  });
}

// Calls f(std::integral_constant<Mask, K>{}) (Mask::None: the dense backward).
template <typename F>
void dispatch_mask(Mask kind, F&& f) {
  switch (kind) {
    case Mask::None:
      return f(std::integral_constant<Mask, Mask::None>{});
    case Mask::TopK:
      return f(std::integral_constant<Mask, Mask::TopK>{});
    case Mask::ActiveWindow:
      return f(std::integral_constant<Mask, Mask::ActiveWindow>{});
  }
  TORCH_CHECK(false, "snnkernels: unknown mask id ", static_cast<int64_t>(kind));
}

}  // namespace snnkernels
