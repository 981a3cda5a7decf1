// The synaptic backward of linear_lif from a compact current gradient dI (ELL from TopK, CSR from
// ActiveWindow; see lif_backward_masked in ops.cpp), on the CPU. Costs O(nnz * F) instead of the
// dense GEMMs' O(R * N * F):
//   grad_x[r, :]      = sum over the entries (n, v) of row r of v * W[n, :]   (gathers rows of W)
//   grad_weight[n, :] = sum over the entries (r, v) in column n of v * x[r, :]
//   grad_bias[n]      = sum over the entries in column n of v
// Deterministic: every output element is owned by one task, which sums its terms in ascending
// entry order (grad_x) or ascending row order (grad_weight; grad_bias in one pass), so the bits
// never depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../lif_checks.h"
#include "simd.h"

namespace snnkernels {
namespace {

// Row r's entries are [begin(r), end(r)) of values / indices: ELL (fixed k) or CSR.
struct Rows {
  const int64_t* row_ptr;  // nullptr: ELL
  int64_t k;
  int64_t begin(int64_t r) const { return row_ptr != nullptr ? row_ptr[r] : r * k; }
  int64_t end(int64_t r) const { return row_ptr != nullptr ? row_ptr[r + 1] : (r + 1) * k; }
};

// Both products are gathered sums: out[0, len) = sum over e ascending of v[e] * src[idx[e], :].
// Columns go in blocks of kBlock: the block of the sum stays in registers while the entries
// stream by, and the packed [rows of src, kBlock] slice the random indices touch stays in L2
// (W: N x 256 B = 256 KiB at N = 1024; x: R x 256 B = 1.6 MiB at R = 6400).
constexpr int64_t kBlock = 64;

// The full-block path is written with GCC vector types (64 bytes: one AVX-512 register, two
// AVX2 or four SSE ones) so the accumulator stays in registers: from the plain loop GCC
// unrolled the entry loop by two and left the column loop scalar (5x slower, measured).
template <typename T>
inline __attribute__((always_inline)) void gather_sum_impl(const T* values, const int32_t* idx,
                                                           int64_t count, const T* src,
                                                           int64_t ld, T* out, int64_t len) {
  typedef T V __attribute__((vector_size(64)));
  constexpr int64_t kLanes = 64 / sizeof(T), kVecs = kBlock / kLanes, kAhead = 4;
  if (len == kBlock) {
    V acc[kVecs] = {};
    for (int64_t e = 0; e < count; ++e) {
      const V v = V{} + values[e];
      const T* s = src + int64_t(idx[e]) * ld;
      if (e + kAhead < count) {  // the gathers are bound by L2 latency: ask for rows early
        const char* next = reinterpret_cast<const char*>(src + int64_t(idx[e + kAhead]) * ld);
        for (int64_t b = 0; b < kBlock * int64_t(sizeof(T)); b += 64) __builtin_prefetch(next + b);
      }
      for (int64_t q = 0; q < kVecs; ++q) {
        V w;
        std::memcpy(&w, s + q * kLanes, sizeof(V));
        acc[q] += v * w;
      }
    }
    std::memcpy(out, acc, sizeof(acc));
    return;
  }
  T acc[kBlock] = {};
  for (int64_t e = 0; e < count; ++e) {
    const T v = values[e];
    const T* s = src + int64_t(idx[e]) * ld;
    for (int64_t i = 0; i < len; ++i) acc[i] += v * s[i];
  }
  std::copy(acc, acc + len, out);
}

// Compiled for AVX-512, AVX2 and the baseline, picked at load time (GCC function multi-
// versioning). Without FMA contraction (-ffp-contract=off) every version rounds the same way.
SNN_CLONES void gather_sum(const float* values, const int32_t* idx, int64_t count,
                           const float* src, int64_t ld, float* out, int64_t len) {
  gather_sum_impl(values, idx, count, src, ld, out, len);
}
SNN_CLONES void gather_sum(const double* values, const int32_t* idx, int64_t count,
                           const double* src, int64_t ld, double* out, int64_t len) {
  gather_sum_impl(values, idx, count, src, ld, out, len);
}

// Copies columns [f0, f0 + len) of the rows of src [rows, f] into packed [rows, kBlock]. The
// gathers then read a contiguous slice: in place, rows f * 4 bytes apart (4 KiB at F = 1024)
// all fall into the same few cache sets, and the slice thrashed L1 and L2.
template <typename T>
void pack_columns(const T* src, int64_t rows, int64_t f, int64_t f0, int64_t len, T* packed) {
  for (int64_t j = 0; j < rows; ++j) std::copy_n(src + j * f + f0, len, packed + j * kBlock);
}

// grad_x[r, :] = sum over row r's entries of v * W[n, :]. Block-major within a task, so one
// packed [N, kBlock] slice of W serves all the task's rows.
template <typename T>
void grad_x_kernel(Rows rows, const T* values, const int32_t* indices, const T* weight,
                   T* grad_x, int64_t num_rows, int64_t n, int64_t f) {
  at::parallel_for(0, num_rows, 64, [&](int64_t r0, int64_t r1) {
    std::vector<T> packed(n * kBlock);
    for (int64_t f0 = 0; f0 < f; f0 += kBlock) {
      const int64_t len = std::min(kBlock, f - f0);
      pack_columns(weight, n, f, f0, len, packed.data());
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t e0 = rows.begin(r);
        gather_sum(values + e0, indices + e0, rows.end(r) - e0, packed.data(), kBlock,
                   grad_x + r * f + f0, len);
      }
    }
  });
}

// The entries by neuron: column j's (row, value) pairs in ascending row order (a stable
// counting sort, O(nnz)), so grad_weight's rows are gathered sums.
template <typename T>
struct Columns {
  std::vector<int64_t> col_ptr;
  std::vector<int32_t> row;
  std::vector<T> value;
};

template <typename T>
Columns<T> by_neuron(Rows rows, const T* values, const int32_t* indices, int64_t num_rows,
                     int64_t n) {
  Columns<T> c;
  const int64_t nnz = rows.begin(num_rows);
  c.col_ptr.assign(n + 1, 0);
  for (int64_t e = 0; e < nnz; ++e) ++c.col_ptr[indices[e] + 1];
  for (int64_t j = 0; j < n; ++j) c.col_ptr[j + 1] += c.col_ptr[j];
  c.row.resize(nnz);
  c.value.resize(nnz);
  std::vector<int64_t> cursor(c.col_ptr.begin(), c.col_ptr.end() - 1);
  for (int64_t r = 0; r < num_rows; ++r) {
    for (int64_t e = rows.begin(r); e < rows.end(r); ++e) {
      const int64_t p = cursor[indices[e]]++;
      c.row[p] = static_cast<int32_t>(r);
      c.value[p] = values[e];
    }
  }
  return c;
}

// grad_weight[j, :] = sum over column j's entries (r, v), in ascending r, of v * x[r, :]: the
// entries sorted by neuron, then each row of grad_weight a gathered sum of x's rows, in
// registers. A task owns a block of columns (its packed [R, kBlock] slice of x) and a range of
// neurons.
template <typename T>
void grad_weight_gather(Rows rows, const T* values, const int32_t* indices, const T* x,
                        T* grad_weight, int64_t num_rows, int64_t n, int64_t f) {
  if (f == 0) return;  // grad_weight [N, 0]: nothing to write
  const Columns<T> c = by_neuron(rows, values, indices, num_rows, n);
  const int64_t f_blocks = (f + kBlock - 1) / kBlock;
  const int64_t want = 2 * static_cast<int64_t>(at::get_num_threads());
  const int64_t n_parts = std::clamp<int64_t>((want + f_blocks - 1) / f_blocks, 1,
                                              std::max<int64_t>(n, 1));
  const int64_t n_width = (n + n_parts - 1) / n_parts;
  at::parallel_for(0, f_blocks * n_parts, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> packed(num_rows * kBlock);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t f0 = (task / n_parts) * kBlock, len = std::min(kBlock, f - f0);
      const int64_t j0 = (task % n_parts) * n_width, j1 = std::min(n, j0 + n_width);
      pack_columns(x, num_rows, f, f0, len, packed.data());
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t p0 = c.col_ptr[j];
        gather_sum(c.value.data() + p0, c.row.data() + p0, c.col_ptr[j + 1] - p0,
                   packed.data(), kBlock, grad_weight + j * f + f0, len);
      }
    }
  });
}

// grad_bias[j] = sum over column j's entries, in ascending r, of v: one pass over the entries in
// row order (much cheaper than from the sorted columns, counting the sort).
template <typename T>
void grad_bias_kernel(Rows rows, const T* values, const int32_t* indices, T* grad_bias,
                      int64_t num_rows, int64_t n) {
  std::fill(grad_bias, grad_bias + n, T(0));
  const int64_t nnz = rows.begin(num_rows);
  for (int64_t e = 0; e < nnz; ++e) grad_bias[indices[e]] += values[e];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_sparse_backward_cpu(
    const at::Tensor& values, const at::Tensor& indices, const at::Tensor& row_ptr,
    const at::Tensor& x, const at::Tensor& weight, bool need_x, bool need_weight,
    bool need_bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "snnkernels: x must be contiguous [R, F]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "snnkernels: on the CPU x must be float32 or float64, got ", x.scalar_type());
  const int64_t k = check_sparse_backward_args(values, indices, row_ptr, x, weight);
  const int64_t num_rows = x.size(0), f = x.size(1), n = weight.size(0);
  const Rows rows{row_ptr.numel() != 0 ? row_ptr.data_ptr<int64_t>() : nullptr, k};
  const auto opts = x.options();
  at::Tensor grad_x = empty_output({need_x ? num_rows : 0, f}, opts);
  at::Tensor grad_weight = empty_output({need_weight ? n : 0, f}, opts);
  at::Tensor grad_bias = empty_output({need_bias ? n : 0}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_sparse_backward_cpu", [&] {
    using T = scalar_t;
    const T* val = values.data_ptr<T>();
    const int32_t* idx = indices.data_ptr<int32_t>();
    if (need_x) {
      grad_x_kernel(rows, val, idx, weight.data_ptr<T>(), grad_x.data_ptr<T>(), num_rows, n, f);
    }
    if (need_weight) {
      grad_weight_gather(rows, val, idx, x.data_ptr<T>(), grad_weight.data_ptr<T>(), num_rows, n,
                         f);
    }
    if (need_bias) grad_bias_kernel(rows, val, idx, grad_bias.data_ptr<T>(), num_rows, n);
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("linear_sparse_backward", &linear_sparse_backward_cpu);
}

}  // namespace snnkernels
