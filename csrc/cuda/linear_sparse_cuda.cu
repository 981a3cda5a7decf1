// The synaptic backward of linear_lif from a compact current gradient dI (TopK: ELL, ActiveWindow:
// CSR; see lif_backward_masked in ops.cpp), on CUDA. The CPU version is
// csrc/cpu/linear_sparse_cpu.cpp; the sums are the same, in the same order:
//   grad_x[r, :]      = sum over row r's entries (n, v), ascending, of v * W[n, :]
//                       (one block per row r, threads over the features: gathers rows of W)
//   grad_weight[n, :] = sum over the entries (r, v) of column n, ascending r, of v * x[r, :]
//                       (one block per neuron n, threads over the features)
//   grad_bias[n]      = sum over the same entries of v (one thread per neuron)
// Both sums are sum_rows: a block stages its entries' (source row, value) in shared memory, a
// chunk at a time, and each thread keeps kCols columns' sums in registers, so the inner loop
// issues kCols independent loads per entry. (Reading the entry, then its row index, then the
// source element one column at a time was a chain of dependent loads, most of the backward.)
// The entries by neuron (CSC) come from a stable sort of the entry indices by neuron (at::sort,
// stable=True: ties keep the entry order, which is ascending row order) and col_ptr from
// at::searchsorted; extra memory O(nnz) int64.
// Deterministic: no atomics; every output element is summed by one thread in the CPU's order, so
// float32 / float64 results are the CPU's bits (no FMA contraction: nvcc runs with --fmad=false,
// the CPU build with -ffp-contract=off). float16 / bfloat16 accumulate in float32 and round once.
// Nothing is saved: the op runs inside linear_lif's backward.
#include <torch/library.h>

#include "lif_cuda_common.cuh"

namespace snnkernels {
namespace {

using namespace gpu;

constexpr int kThreads = 128;
constexpr int kCols = 8;      // output columns per thread per pass: f <= 1024 in one pass
constexpr int kChunk = 256;   // entries staged in shared memory at a time
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // blocks loop over the rest

unsigned blocks_for(int64_t items) {
  return static_cast<unsigned>(std::min<int64_t>(items, kMaxBlocks));
}

// Row r's entries are [begin(r), end(r)): ELL (row_ptr == nullptr, fixed k) or CSR.
struct Rows {
  const int64_t* row_ptr;
  int64_t k;
  __device__ int64_t begin(int64_t r) const { return row_ptr != nullptr ? row_ptr[r] : r * k; }
  __device__ int64_t end(int64_t r) const {
    return row_ptr != nullptr ? row_ptr[r + 1] : (r + 1) * k;
  }
};

// grad_x's entries: entry e of a row reads row indices[e] of W.
template <typename T, typename A>
struct RowEntries {
  const T* values;
  const int32_t* indices;
  __device__ void operator()(int64_t e, int64_t* row, A* value) const {
    *row = indices[e];
    *value = static_cast<A>(values[e]);
  }
};

// grad_weight's entries: position p of a column is entry perm[p], which reads row entry_row[e]
// of x.
template <typename T, typename A>
struct ColumnEntries {
  const int64_t* perm;
  const int64_t* entry_row;
  const T* values;
  __device__ void operator()(int64_t p, int64_t* row, A* value) const {
    const int64_t e = perm[p];
    *row = entry_row[e];
    *value = static_cast<A>(values[e]);
  }
};

// out[c] = sum over p in [p0, p1) ascending of value(p) * src[row(p) * f + c], for c < f; the
// whole block calls it with the same arguments (it synchronizes).
template <typename T, typename A, typename Entry>
__device__ void sum_rows(Entry entry, int64_t p0, int64_t p1, const T* __restrict__ src,
                         T* __restrict__ out, int64_t f, int64_t* s_row, A* s_val) {
  for (int64_t c0 = 0; c0 < f; c0 += int64_t(kThreads) * kCols) {
    A acc[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[j] = A(0);
    for (int64_t q0 = p0; q0 < p1; q0 += kChunk) {
      const int len = static_cast<int>(std::min<int64_t>(kChunk, p1 - q0));
      __syncthreads();  // the previous chunk is consumed
      for (int i = threadIdx.x; i < len; i += kThreads) entry(q0 + i, &s_row[i], &s_val[i]);
      __syncthreads();
      for (int i = 0; i < len; ++i) {
        const A v = s_val[i];
        const T* s = src + s_row[i] * f;
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          const int64_t c = c0 + threadIdx.x + int64_t(j) * kThreads;
          if (c < f) acc[j] += v * static_cast<A>(s[c]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int64_t c = c0 + threadIdx.x + int64_t(j) * kThreads;
      if (c < f) out[c] = static_cast<T>(acc[j]);
    }
  }
}

// grad_x[r, f] = sum over e in row r ascending of values[e] * weight[indices[e], f].
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    lif_sparse_grad_x_kernel(Rows rows, const T* __restrict__ values,
                             const int32_t* __restrict__ indices, const T* __restrict__ weight,
                             T* __restrict__ grad_x, int64_t num_rows, int64_t f) {
  __shared__ int64_t s_row[kChunk];
  __shared__ A s_val[kChunk];
  const RowEntries<T, A> entry{values, indices};
  for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    sum_rows<T, A>(entry, rows.begin(r), rows.end(r), weight, grad_x + r * f, f, s_row, s_val);
  }
}

// The row of every entry (CSR: from row_ptr; ELL: e / k).
__global__ void __launch_bounds__(kThreads)
    lif_sparse_entry_rows_kernel(Rows rows, int64_t* __restrict__ entry_row, int64_t num_rows) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < num_rows;
       r += static_cast<int64_t>(gridDim.x) * kThreads) {
    for (int64_t e = rows.begin(r); e < rows.end(r); ++e) entry_row[e] = r;
  }
}

// grad_weight[n, f] = sum over p in [col_ptr[n], col_ptr[n + 1]) ascending of
// values[perm[p]] * x[entry_row[perm[p]], f].
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    lif_sparse_grad_weight_kernel(const int64_t* __restrict__ col_ptr,
                                  const int64_t* __restrict__ perm,
                                  const int64_t* __restrict__ entry_row,
                                  const T* __restrict__ values, const T* __restrict__ x,
                                  T* __restrict__ grad_weight, int64_t n, int64_t f) {
  __shared__ int64_t s_row[kChunk];
  __shared__ A s_val[kChunk];
  const ColumnEntries<T, A> entry{perm, entry_row, values};
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    sum_rows<T, A>(entry, col_ptr[j], col_ptr[j + 1], x, grad_weight + j * f, f, s_row, s_val);
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    lif_sparse_grad_bias_kernel(const int64_t* __restrict__ col_ptr,
                                const int64_t* __restrict__ perm, const T* __restrict__ values,
                                T* __restrict__ grad_bias, int64_t n) {
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * kThreads) {
    A acc = A(0);
    for (int64_t p = col_ptr[j]; p < col_ptr[j + 1]; ++p) acc += static_cast<A>(values[perm[p]]);
    grad_bias[j] = static_cast<T>(acc);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_sparse_backward_cuda(
    const at::Tensor& values, const at::Tensor& indices, const at::Tensor& row_ptr,
    const at::Tensor& x, const at::Tensor& weight, bool need_x, bool need_weight,
    bool need_bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.is_cuda(),
              "snnkernels: x must be a contiguous CUDA tensor [R, F]");
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
              "snnkernels: on CUDA x must be float32, float16, bfloat16 or float64, got ", dt);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t k = check_sparse_backward_args(values, indices, row_ptr, x, weight);
  const int64_t num_rows = x.size(0), f = x.size(1), n = weight.size(0), nnz = values.numel();
  const Rows rows{row_ptr.numel() != 0 ? row_ptr.data_ptr<int64_t>() : nullptr, k};
  const auto opts = x.options();
  at::Tensor grad_x = empty_output({need_x ? num_rows : 0, f}, opts);
  at::Tensor grad_weight = empty_output({need_weight ? n : 0, f}, opts);
  at::Tensor grad_bias = empty_output({need_bias ? n : 0}, opts);
  // The entries by neuron: a stable sort keeps each column's entries in ascending row order.
  at::Tensor perm, col_ptr, entry_row;
  if ((need_weight || need_bias) && n > 0) {
    const at::Tensor keys = indices.reshape({-1}).to(at::kLong);
    at::Tensor sorted;
    std::tie(sorted, perm) = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    col_ptr = at::searchsorted(sorted, at::arange(n + 1, keys.options()));
    if (need_weight) {
      entry_row = at::empty({nnz}, keys.options());
      if (nnz > 0 && num_rows > 0) {
        const auto blocks =
            static_cast<unsigned>(std::min<int64_t>(ceil_div(num_rows, kThreads), kMaxBlocks));
        lif_sparse_entry_rows_kernel<<<blocks, kThreads, 0, current_stream()>>>(
            rows, entry_row.data_ptr<int64_t>(), num_rows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "linear_sparse_backward_cuda",
                                  [&] {
    using T = scalar_t;
    using A = at::acc_type<T, /*is_cuda=*/true>;
    if (need_x && num_rows > 0 && f > 0) {
      lif_sparse_grad_x_kernel<T, A><<<blocks_for(num_rows), kThreads, 0, current_stream()>>>(
          rows, values.data_ptr<T>(), indices.data_ptr<int32_t>(), weight.data_ptr<T>(),
          grad_x.data_ptr<T>(), num_rows, f);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (need_weight && n > 0 && f > 0) {
      lif_sparse_grad_weight_kernel<T, A><<<blocks_for(n), kThreads, 0, current_stream()>>>(
          col_ptr.data_ptr<int64_t>(), perm.data_ptr<int64_t>(), entry_row.data_ptr<int64_t>(),
          values.data_ptr<T>(), x.data_ptr<T>(), grad_weight.data_ptr<T>(), n, f);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (need_bias && n > 0) {
      lif_sparse_grad_bias_kernel<T, A>
          <<<static_cast<unsigned>(std::min<int64_t>(ceil_div(n, kThreads), kMaxBlocks)),
             kThreads, 0, current_stream()>>>(col_ptr.data_ptr<int64_t>(),
                                             perm.data_ptr<int64_t>(), values.data_ptr<T>(),
                                             grad_bias.data_ptr<T>(), n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CUDA, m) {
  m.impl("linear_sparse_backward", &linear_sparse_backward_cuda);
}

}  // namespace snnkernels
