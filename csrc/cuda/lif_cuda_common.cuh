// Pieces shared by the CUDA kernels (lif_cuda.cu: dense forward and backward; lif_masked_cuda.cu:
// the sparse-gradient backward; linear_sparse_cuda.cu: the sparse synaptic backward): the current
// stream, parameters, upstream gradient rows, input checks and the deterministic column sums.
#pragma once

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../lif_checks.h"
#include "../lif_dispatch.h"

namespace snnkernels {
namespace gpu {

constexpr int kThreads = 256;

// c10::cuda's stream (what at::cuda::getCurrentCUDAStream returns); ATen/cuda/CUDAContext.h is
// not included because it pulls in cuBLAS/cuSPARSE headers the kernels do not need.
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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
inline at::Tensor column_sums(const at::Tensor& partial, int64_t period) {
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

inline void check_cuda_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), "snnkernels: ", name,
              " must be contiguous [T, M]");
  TORCH_CHECK(t.is_cuda(), "snnkernels: ", name, " must be a CUDA tensor");
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
              "snnkernels: on CUDA ", name,
              " must be float32, float16, bfloat16 or float64, got ", dt);
}

}  // namespace gpu
}  // namespace snnkernels
