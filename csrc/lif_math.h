// Per-neuron math of the leaky integrate-and-fire neuron (docs/semantics.md),
// written once and compiled by both the C++ CPU kernels and the CUDA kernels, so the CPU tests
// exercise exactly the arithmetic the GPU runs. Everything here is branch-free on data
// (ternaries on values compile to selects) so the CPU loops vectorize.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SNN_HD __host__ __device__ __forceinline__
#else
#define SNN_HD inline
#endif

namespace snnkernels {

// Ids shared with snnkernels/surrogate.py (SURROGATE_IDS there).
enum class Surrogate : int64_t {
  ATan = 0,             // (alpha/2) / (1 + (pi/2 * alpha * z)^2)      p0 = alpha/2, p1 = pi/2*alpha
  FastSigmoid = 1,      // 1 / (k|z| + 1)^2                             p0 = k
  Sigmoid = 2,          // k e^{-kz} / (e^{-kz} + 1)^2 (computed as k e^{-k|z|}/(1+e^{-k|z|})^2)
  SpikeRateEscape = 3,  // k exp(-beta |z - 1|)                         p0 = beta, p1 = k
  Triangular = 4,       // +t where z < 0, -t where z >= 0             p0 = t
  StraightThrough = 5,  // 1
  Heaviside = 6,        // H(z)
};

// Ids shared with snnkernels/lif.py (RESET_IDS there).
enum class Reset : int64_t { Subtract = 0, Zero = 1, None = 2 };

// Sparse-gradient masks (docs/semantics.md); ids shared with snnkernels/sparse.py (MASK_IDS there).
enum class Mask : int64_t { None = 0, TopK = 1, ActiveWindow = 2 };

SNN_HD float math_exp(float v) {
#if defined(__CUDA_ARCH__)
  return expf(v);
#else
  return __builtin_expf(v);
#endif
}
SNN_HD double math_exp(double v) {
#if defined(__CUDA_ARCH__)
  return exp(v);
#else
  return __builtin_exp(v);
#endif
}
template <typename T>
SNN_HD T math_abs(T v) {
  return v < T(0) ? -v : v;
}

// H(z) with a strict >: U == threshold does not fire. NaN does not fire either.
template <typename T>
SNN_HD T heaviside(T z) {
  return z > T(0) ? T(1) : T(0);
}

// beta' = clamp(beta, 0, 1); NaN stays NaN like torch.clamp.
template <typename T>
SNN_HD T clamp01(T b) {
  return b < T(0) ? T(0) : (b > T(1) ? T(1) : b);
}

// d clamp(beta)/d beta as torch.clamp's backward computes it: 1 inside [0, 1] (inclusive).
template <typename T>
SNN_HD T clamp01_grad(T b) {
  return (b >= T(0) && b <= T(1)) ? T(1) : T(0);
}

// sigma'(z), z = U - theta. p0/p1 are constants precomputed in double on the host
// (Surrogate.constants() in snnkernels/surrogate.py), so none is recomputed per element.
template <Surrogate S, typename T>
SNN_HD T surrogate_grad(T z, T p0, T p1) {
  if constexpr (S == Surrogate::ATan) {
    const T v = p1 * z;
    return p0 / (T(1) + v * v);
  } else if constexpr (S == Surrogate::FastSigmoid) {
    const T d = p0 * math_abs(z) + T(1);
    return T(1) / (d * d);
  } else if constexpr (S == Surrogate::Sigmoid) {
    // Even function: using |z| keeps e^{-k|z|} <= 1, so it never overflows (snnTorch's
    // e^{-kz} form gives inf/inf = NaN in float32 for z < -3.5 at k = 25).
    const T e = math_exp(-p0 * math_abs(z));
    const T d = e + T(1);
    return p0 * e / (d * d);
  } else if constexpr (S == Surrogate::SpikeRateEscape) {
    return p1 * math_exp(-p0 * math_abs(z - T(1)));
  } else if constexpr (S == Surrogate::Triangular) {
    return z >= T(0) ? -p0 : p0;
  } else if constexpr (S == Surrogate::StraightThrough) {
    return T(1);
  } else {
    return heaviside(z);
  }
}

// One forward step. u_prev is the membrane the previous step returned (or mem0).
// Returns the membrane before this step's own reset (h in the backward); writes the spike and,
// with reset_delay=False, the membrane after the immediate reset into *u_out.
template <Reset R, bool kResetDelay, typename T>
SNN_HD T lif_step(T x, T u_prev, T beta_c, T thr, T graded, T* spk, T* u_out) {
  const T reset = heaviside(u_prev - thr);  // detached reset signal R_t
  T h;
  if constexpr (R == Reset::Subtract) {
    h = beta_c * u_prev + x - reset * thr;
  } else if constexpr (R == Reset::Zero) {
    h = beta_c * ((T(1) - reset) * u_prev) + x;
  } else {
    h = beta_c * u_prev + x;
  }
  const T fired = heaviside(h - thr);
  *spk = graded * fired;
  T u = h;
  if constexpr (!kResetDelay) {
    const T d = fired - reset;  // snnTorch: spk / graded - reset
    if constexpr (R == Reset::Subtract) {
      u = h - d * thr;
    } else if constexpr (R == Reset::Zero) {
      u = h - d * h;
    }
  }
  *u_out = u;
  return h;
}

// The backward of one step is split in two so that a sparse-gradient mask (snnkernels.sparse,
// docs/semantics.md) can act on dL/dh between them: lif_step_grad_h gives g_h = dL/dh_t (h = the
// membrane before this step's own reset; g_h is also dL/dx_t, since dh/dx = 1), and
// lif_step_grad_carry turns a (possibly masked) g_h into the carry dL/du_{t-1} and the beta and
// threshold terms of h. `sg` is sigma'(h - thr), computed by the caller (a window may zero it).
//
// kLeakOnly (ActiveWindow): the same-step reset of reset_delay=False is treated as detached, like
// R_t always is, so no surrogate term flows through a reset: gradient through time follows the
// leak beta' (and the zero-reset factor) only.
template <Reset R, bool kResetDelay, bool kLeakOnly, typename T>
SNN_HD T lif_step_grad_h(T h, T u_prev, T g_spk, T g_mem, T thr, T graded, T sg, T carry,
                         T* thr_acc, T* d_graded) {
  const T fired = heaviside(h - thr);
  const T reset = heaviside(u_prev - thr);
  const T g_u = g_mem + carry;  // dL/d(returned membrane)
  T g_h;
  T acc = T(0);
  if constexpr (kResetDelay || R == Reset::None) {
    g_h = g_u;
  } else if constexpr (R == Reset::Subtract) {
    // u = h - (H(h - thr) - R) * thr, surrogate through H (unless leak-only), R detached.
    const T d = fired - reset;
    if constexpr (kLeakOnly) {
      g_h = g_u;
      acc = -(g_u * d);
    } else {
      g_h = g_u * (T(1) - thr * sg);
      acc = g_u * (thr * sg - d);
    }
  } else {
    // u = h - (H(h - thr) - R) * h
    const T d = fired - reset;
    if constexpr (kLeakOnly) {
      g_h = g_u * (T(1) - d);
    } else {
      g_h = g_u * (T(1) - d - h * sg);
      acc = g_u * (h * sg);
    }
  }
  const T g_fire = g_spk * graded * sg;  // through S = graded * H(h - thr)
  *thr_acc = acc - g_fire;
  *d_graded = *d_graded + g_spk * fired;
  return g_h + g_fire;
}

// From g_h = dL/dh_t: the carry dL/du_{t-1} and the beta and threshold terms of
// h = beta' * keep * u_prev + x - R * thr (thr_acc from lif_step_grad_h is added to d_thr here).
template <Reset R, typename T>
SNN_HD void lif_step_grad_carry(T g_h, T u_prev, T beta_c, T thr, T thr_acc, T* carry,
                                T* d_beta, T* d_thr) {
  const T reset = heaviside(u_prev - thr);
  const T keep = (R == Reset::Zero) ? (T(1) - reset) : T(1);
  if constexpr (R == Reset::Subtract) {
    thr_acc = thr_acc - g_h * reset;  // the -R*thr term of h
  }
  *carry = g_h * beta_c * keep;
  *d_beta = *d_beta + g_h * keep * u_prev;
  *d_thr = *d_thr + thr_acc;
}

// ActiveWindow's gate (docs/semantics.md): a neuron is active where |h - thr| < width (NaN:
// inactive). Used by the masked backward and by the CSR row counts, so both agree.
template <typename T>
SNN_HD bool window_active(T h, T thr, T width) {
  return math_abs(h - thr) < width;
}

// g_h = dL/dh_t of one step of the masked backward (the first half of the split step, before
// the mask's selection). kWindow (ActiveWindow): sigma' and g_h are 0 where inactive and the
// same-step reset is detached (kLeakOnly); *active gets the gate (always true without kWindow).
// The CPU and the CUDA masked kernels both call this, so they compute the same bits.
template <Surrogate S, Reset R, bool kResetDelay, bool kWindow, typename T>
SNN_HD T masked_step_grad_h(T h, T u_prev, T g_spk, T g_mem, T thr, T graded, T p0, T p1,
                            T width, T carry, T* thr_acc, T* d_graded, bool* active) {
  T sg = surrogate_grad<S>(h - thr, p0, p1);
  bool on = true;
  if constexpr (kWindow) {
    on = window_active(h, thr, width);
    sg = on ? sg : T(0);
  }
  const T g = lif_step_grad_h<R, kResetDelay, kWindow>(h, u_prev, g_spk, g_mem, thr, graded, sg,
                                                       carry, thr_acc, d_graded);
  *active = on;
  if constexpr (kWindow) {
    return on ? g : T(0);
  } else {
    return g;
  }
}

// TopK's ranking key: |v| as an unsigned integer of the same order (the bits with the sign bit
// cleared, so -0.0 ranks as 0.0), NaN ranking as +inf (torch.sort puts NaN first in descending
// order). Larger key = larger magnitude; equal keys tie to the lower index (in the callers).
SNN_HD uint32_t topk_rank_key(float v) {
  uint32_t k;
#if defined(__CUDA_ARCH__)
  k = __float_as_uint(v);
#else
  __builtin_memcpy(&k, &v, sizeof(k));
#endif
  return v != v ? uint32_t(0x7f800000u) : (k & uint32_t(0x7fffffffu));
}
SNN_HD uint64_t topk_rank_key(double v) {
  uint64_t k;
#if defined(__CUDA_ARCH__)
  k = static_cast<uint64_t>(__double_as_longlong(v));
#else
  __builtin_memcpy(&k, &v, sizeof(k));
#endif
  return v != v ? uint64_t(0x7ff0000000000000ull) : (k & uint64_t(0x7fffffffffffffffull));
}

// Gradients of one step, walked backwards in time (dense BPTT). Inputs: the saved membranes
// (h = before this step's own reset, u_prev = what the previous step returned), upstream grads
// of the outputs (g_spk, g_mem) and `carry` = dL/du_t arriving from step t+1. Outputs: dL/dx_t
// (return value), the new carry dL/du_{t-1}, and additions to the per-neuron parameter
// gradients.
template <Surrogate S, Reset R, bool kResetDelay, typename T>
SNN_HD T lif_step_backward(T h, T u_prev, T g_spk, T g_mem, T beta_c, T thr, T graded, T p0,
                           T p1, T* carry, T* d_beta, T* d_thr, T* d_graded) {
  const T sg = surrogate_grad<S>(h - thr, p0, p1);
  T thr_acc;
  const T g_h = lif_step_grad_h<R, kResetDelay, false>(h, u_prev, g_spk, g_mem, thr, graded, sg,
                                                       *carry, &thr_acc, d_graded);
  lif_step_grad_carry<R>(g_h, u_prev, beta_c, thr, thr_acc, carry, d_beta, d_thr);
  return g_h;
}

}  // namespace snnkernels
