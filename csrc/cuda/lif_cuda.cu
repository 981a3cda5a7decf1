// Fused multi-step LIF forward and surrogate-gradient backward on CUDA.
//
// Layout: time-major [T, M]. One thread per neuron walks time in registers; at every step the
// threads of a warp touch 32 consecutive elements of one row, so each load and store is
// coalesced. The per-step arithmetic is lif_math.h's, shared with the CPU kernels. float16 and
// bfloat16 are loaded, computed in float32 and rounded only when stored: the membrane carried
// from step to step stays float32, so the backward, which recomputes the reset and the surrogate
// from the stored (rounded) membranes, can disagree with the forward about a neuron lying within
// one rounding step of the threshold (float32 and float64 are exact).
//
// Saved for backward (by the Python autograd, see snnkernels/_ops.py): with reset_delay=True only
// the returned membrane `mem` (one value, 4 bytes per element in float32; no extra memory when
// the caller keeps `mem`); with reset_delay=False also the pre-reset membrane (8 bytes per
// element in float32), since the same-step reset is not invertible (reset to zero forgets it).
//
// Parameter gradients: each thread sums its neuron's terms over time into per-neuron buffers [M]
// (no atomics); column_sums then reduces them to the P parameter elements in a fixed order (see
// there), so the bits are the same on every run and every launch configuration.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../lif_checks.h"
#include "../lif_dispatch.h"

namespace snnkernels {
namespace {

constexpr int kThreads = 256;

// c10::cuda's stream (what at::cuda::getCurrentCUDAStream returns); ATen/cuda/CUDAContext.h is
// not included because it pulls in cuBLAS/cuSPARSE headers the kernels do not need.
cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A parameter with P elements in the accumulation type; neuron n uses element n % P.
template <typename A>
struct Param {
  const A* data;
  int64_t period;
  __device__ A at(int64_t n) const { return data[n % period]; }
};

template <typename A>
struct Params {
  Param<A> beta, threshold, graded;
};

template <typename A>
Params<A> params_of(const at::Tensor& beta, const at::Tensor& thr, const at::Tensor& graded) {
  return {{beta.data_ptr<A>(), beta.numel()},
          {thr.data_ptr<A>(), thr.numel()},
          {graded.data_ptr<A>(), graded.numel()}};
}

// An upstream gradient: row t at data + t * step (step = M for [T, M], 0 for one broadcast
// element); data == nullptr is an all-zero gradient (None).
template <typename T>
struct GradRows {
  const T* data;
  int64_t step;
};

template <typename T>
GradRows<T> grad_rows(const c10::optional<at::Tensor>& g, int64_t m) {
  if (!g.has_value()) return {nullptr, 0};
  return {g->data_ptr<T>(), g->numel() != 1 ? m : 0};
}

template <typename T, typename A>
__device__ __forceinline__ A load_grad(const GradRows<T>& g, int64_t t, int64_t n) {
  return g.data == nullptr ? A(0) : static_cast<A>(g.data[t * g.step + (g.step != 0 ? n : 0)]);
}

// Time steps whose loads a thread issues together before the dependent arithmetic: with one
// thread per neuron, one load in flight per thread is too little to cover DRAM latency.
constexpr int kBatch = 4;

template <typename T, typename A, Reset R, bool kDelay>
__global__ void __launch_bounds__(kThreads)
    lif_forward_kernel(const T* __restrict__ x, const T* __restrict__ mem0, Params<A> params,
                       T* __restrict__ spk, T* __restrict__ mem, T* __restrict__ pre,
                       int64_t steps, int64_t m) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n >= m) return;
  const A beta_c = clamp01(params.beta.at(n));
  const A thr = params.threshold.at(n);
  const A graded = params.graded.at(n);
  A u = mem0 != nullptr ? static_cast<A>(mem0[n]) : A(0);
  for (int64_t t0 = 0; t0 < steps; t0 += kBatch) {
    const int64_t len = std::min<int64_t>(kBatch, steps - t0);
    A xs[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) xs[k] = static_cast<A>(x[(t0 + k) * m + n]);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) {
        const int64_t off = (t0 + k) * m + n;
        A s, u_next;
        const A h = lif_step<R, kDelay>(xs[k], u, beta_c, thr, graded, &s, &u_next);
        spk[off] = static_cast<T>(s);
        mem[off] = static_cast<T>(u_next);
        if constexpr (!kDelay) pre[off] = static_cast<T>(h);
        u = u_next;
      }
    }
  }
}

template <typename T, typename A, Surrogate S, Reset R, bool kDelay>
__global__ void __launch_bounds__(kThreads)
    lif_backward_kernel(GradRows<T> grad_spk, GradRows<T> grad_mem, const T* __restrict__ mem,
                        const T* __restrict__ pre, const T* __restrict__ mem0, Params<A> params,
                        A p0, A p1, T* __restrict__ grad_x, T* __restrict__ grad_mem0,
                        A* __restrict__ grad_beta, A* __restrict__ grad_thr,
                        A* __restrict__ grad_graded, int64_t steps, int64_t m) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n >= m) return;
  const A beta_raw = params.beta.at(n);
  const A beta_c = clamp01(beta_raw);
  const A thr = params.threshold.at(n);
  const A graded = params.graded.at(n);
  const A first_prev = mem0 != nullptr ? static_cast<A>(mem0[n]) : A(0);
  A carry = A(0), d_beta = A(0), d_thr = A(0), d_graded = A(0);
  // u: the membrane step t returned, which step t + 1 read as u_prev, so each stored membrane is
  // loaded once. With reset_delay it is also h; otherwise h comes from `pre`.
  A u = kDelay ? static_cast<A>(mem[(steps - 1) * m + n]) : A(0);
  for (int64_t t0 = steps - 1; t0 >= 0; t0 -= kBatch) {
    const int64_t len = std::min<int64_t>(kBatch, t0 + 1);
    A u_prev[kBatch], h[kBatch], g_spk[kBatch], g_mem[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) {
        const int64_t t = t0 - k, off = t * m + n;
        u_prev[k] = t > 0 ? static_cast<A>(mem[off - m]) : first_prev;
        if constexpr (!kDelay) h[k] = static_cast<A>(pre[off]);
        g_spk[k] = load_grad<T, A>(grad_spk, t, n);
        g_mem[k] = load_grad<T, A>(grad_mem, t, n);
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (k < len) {
        const A gx = lif_step_backward<S, R, kDelay>(kDelay ? u : h[k], u_prev[k], g_spk[k],
                                                     g_mem[k], beta_c, thr, graded, p0, p1,
                                                     &carry, &d_beta, &d_thr, &d_graded);
        grad_x[(t0 - k) * m + n] = static_cast<T>(gx);
        u = u_prev[k];
      }
    }
  }
  grad_mem0[n] = static_cast<T>(carry);
  if (grad_beta != nullptr) {
    grad_beta[n] = d_beta * clamp01_grad(beta_raw);
    grad_thr[n] = d_thr;
    grad_graded[n] = d_graded;
  }
}

// Column sums of a [rows, cols] row-major matrix, accumulated in double. The order depends on
// (rows, cols) only, never on the device or the grid size (it is not the CPU's ascending order,
// so CPU and CUDA agree up to double rounding before the one rounding to the output type):
//   W = 32 columns per block when cols >= 32 (coalesced rows), else W = 1; L = 256 / W lanes
//   per column; rows are cut into chunks of kRowsPerLane * L consecutive rows. In chunk c, lane l
//   sums rows c*K + l, c*K + l + L, ... in ascending order; the L lane sums are then combined by
//   a fixed pairwise tree (lane l += lane l + L/2, then l + L/4, ..., down to lane 0).
// One chunk: the result is the column sum. Several: out holds the chunk sums [chunks, cols]
// (double), which column_sums reduces again by the same rule.
constexpr int kReduceThreads = 256;
constexpr int64_t kRowsPerLane = 8;

template <typename In, typename Out>
__global__ void __launch_bounds__(kReduceThreads)
    lif_column_sum_kernel(const In* __restrict__ in, Out* __restrict__ out, int64_t rows,
                          int64_t cols, int64_t chunks, int width) {
  __shared__ double lane_sums[kReduceThreads];
  const int lanes = kReduceThreads / width;
  const int col = threadIdx.x % width, lane = threadIdx.x / width;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * width + col;
  const int64_t chunk_rows = lanes * kRowsPerLane;
  for (int64_t c = blockIdx.y; c < chunks; c += gridDim.y) {
    double acc = 0.0;
    if (p < cols) {
      const int64_t end = std::min(rows, (c + 1) * chunk_rows);
      for (int64_t j = c * chunk_rows + lane; j < end; j += lanes) {
        acc += static_cast<double>(in[j * cols + p]);
      }
    }
    lane_sums[threadIdx.x] = acc;
    __syncthreads();
    for (int half = lanes / 2; half > 0; half /= 2) {
      if (lane < half) lane_sums[threadIdx.x] += lane_sums[threadIdx.x + half * width];
      __syncthreads();
    }
    if (lane == 0 && p < cols) out[c * cols + p] = static_cast<Out>(lane_sums[col]);
    __syncthreads();  // lane_sums is reused by the next chunk
  }
}

template <typename In, typename Out>
void launch_column_sum(const at::Tensor& in, const at::Tensor& out, int64_t rows, int64_t cols,
                       int64_t chunks, int width) {
  const dim3 grid(static_cast<unsigned>(ceil_div(cols, width)),
                  static_cast<unsigned>(std::min<int64_t>(chunks, 65535)));
  lif_column_sum_kernel<In, Out><<<grid, kReduceThreads, 0, current_stream()>>>(
      in.data_ptr<In>(), out.data_ptr<Out>(), rows, cols, chunks, width);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out[p] = sum over j of partial[j * P + p], in the fixed order of lif_column_sum_kernel.
at::Tensor column_sums(const at::Tensor& partial, int64_t period) {
  const int64_t m = partial.numel();
  if (period == m) return partial;
  const int width = period >= 32 ? 32 : 1;
  const int64_t chunk_rows = (kReduceThreads / width) * kRowsPerLane;
  at::Tensor in = partial;
  int64_t rows = m / period;
  while (true) {
    const int64_t chunks = ceil_div(rows, chunk_rows);
    const bool last = chunks == 1;
    at::Tensor out = last ? empty_output({period}, partial.options())
                          : at::empty({chunks, period}, partial.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES(partial.scalar_type(), "column_sums", [&] {
      if (in.scalar_type() == at::kDouble) {
        if (last) {
          launch_column_sum<double, scalar_t>(in, out, rows, period, chunks, width);
        } else {
          launch_column_sum<double, double>(in, out, rows, period, chunks, width);
        }
      } else if (last) {
        launch_column_sum<scalar_t, scalar_t>(in, out, rows, period, chunks, width);
      } else {
        launch_column_sum<scalar_t, double>(in, out, rows, period, chunks, width);
      }
    });
    if (last) return out;
    in = out;
    rows = chunks;
  }
}

void check_cuda_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), "snnkernels: ", name,
              " must be contiguous [T, M]");
  TORCH_CHECK(t.is_cuda(), "snnkernels: ", name, " must be a CUDA tensor");
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
              "snnkernels: on CUDA ", name,
              " must be float32, float16, bfloat16 or float64, got ", dt);
}

unsigned neuron_blocks(int64_t m) { return static_cast<unsigned>(ceil_div(m, kThreads)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_forward_cuda(
    const at::Tensor& x, const c10::optional<at::Tensor>& mem0, const at::Tensor& beta,
    const at::Tensor& threshold, const at::Tensor& graded, int64_t /*surrogate*/, double /*p0*/,
    double /*p1*/, int64_t reset, bool reset_delay) {
  check_cuda_input(x, "x");
  const int64_t steps = x.size(0), m = x.size(1);
  check_state(mem0, x);
  check_param(beta, "beta", x, m);
  check_param(threshold, "threshold", x, m);
  check_param(graded, "graded", x, m);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor spk = empty_output(x.sizes(), x.options());
  at::Tensor mem = empty_output(x.sizes(), x.options());
  at::Tensor pre = empty_output(reset_delay ? at::IntArrayRef{0} : x.sizes(), x.options());
  if (x.numel() == 0) return {spk, mem, pre};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_forward_cuda",
                                  [&] {
    using T = scalar_t;
    using A = at::acc_type<T, /*is_cuda=*/true>;
    const Params<A> params = params_of<A>(beta, threshold, graded);
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    T* pre_ptr = reset_delay ? nullptr : pre.data_ptr<T>();
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      lif_forward_kernel<T, A, decltype(r)::value, decltype(delay)::value>
          <<<neuron_blocks(m), kThreads, 0, current_stream()>>>(
              x.data_ptr<T>(), mem0_ptr, params, spk.data_ptr<T>(), mem.data_ptr<T>(), pre_ptr,
              steps, m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {spk, mem, pre};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_backward_cuda(
    const c10::optional<at::Tensor>& grad_spk, const c10::optional<at::Tensor>& grad_mem,
    const at::Tensor& mem, const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
    const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
    int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay,
    bool param_grads) {
  check_cuda_input(mem, "mem");
  const int64_t steps = mem.size(0), m = mem.size(1);
  check_backward_args(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                      reset_delay);
  const c10::cuda::CUDAGuard guard(mem.device());
  const auto acc = mem.options().dtype(accumulation_dtype(mem.scalar_type()));
  at::Tensor grad_x = empty_output(mem.sizes(), mem.options());
  at::Tensor grad_mem0 = empty_output({m}, mem.options());
  // Per-neuron partial sums over time; reduced to each parameter's P elements at the end.
  at::Tensor grad_beta = empty_output({param_grads ? m : 0}, acc);
  at::Tensor grad_thr = empty_output({param_grads ? m : 0}, acc);
  at::Tensor grad_graded = empty_output({param_grads ? m : 0}, acc);
  if (m == 0 || steps == 0) {
    grad_mem0.zero_();
    if (!param_grads) return {grad_x, grad_mem0, grad_beta, grad_thr, grad_graded};
    return {grad_x, grad_mem0, at::zeros_like(beta), at::zeros_like(threshold),
            at::zeros_like(graded)};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mem.scalar_type(),
                                  "lif_backward_cuda", [&] {
    using T = scalar_t;
    using A = at::acc_type<T, /*is_cuda=*/true>;
    const Params<A> params = params_of<A>(beta, threshold, graded);
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    const T* pre_ptr = reset_delay ? nullptr : pre_reset.data_ptr<T>();
    A* gb = param_grads ? grad_beta.data_ptr<A>() : nullptr;
    A* gt = param_grads ? grad_thr.data_ptr<A>() : nullptr;
    A* gg = param_grads ? grad_graded.data_ptr<A>() : nullptr;
    dispatch_surrogate(surrogate, [&](auto s) {
      dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
        lif_backward_kernel<T, A, decltype(s)::value, decltype(r)::value, decltype(delay)::value>
            <<<neuron_blocks(m), kThreads, 0, current_stream()>>>(
                grad_rows<T>(grad_spk, m), grad_rows<T>(grad_mem, m), mem.data_ptr<T>(),
                pre_ptr, mem0_ptr, params, static_cast<A>(p0), static_cast<A>(p1),
                grad_x.data_ptr<T>(), grad_mem0.data_ptr<T>(), gb, gt, gg, steps, m);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  if (!param_grads) return {grad_x, grad_mem0, grad_beta, grad_thr, grad_graded};
  return {grad_x, grad_mem0, column_sums(grad_beta, beta.numel()),
          column_sums(grad_thr, threshold.numel()), column_sums(grad_graded, graded.numel())};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CUDA, m) {
  m.impl("lif_forward", &lif_forward_cuda);
  m.impl("lif_backward", &lif_backward_cuda);
}

}  // namespace snnkernels
