// The synaptic backward of linear_lif from a compact current gradient dI (ELL from TopK, CSR from
// ActiveWindow; see lif_backward_masked in ops.cpp), on the CPU. Costs O(nnz * F) instead of the
// dense GEMMs' O(R * N * F):
//   grad_x[r, :]      = sum over the entries (n, v) of row r of v * W[n, :]   (gathers rows of W)
//   grad_weight[n, :] = sum over the entries (r, v) in column n of v * x[r, :]
//   grad_bias[n]      = sum over the entries in column n of v
// Deterministic: the entries are bucketed by neuron (a counting sort that keeps row order), and
// each output row (of grad_x or grad_weight) is owned by one thread that sums its terms in
// ascending row / entry order, so the bits never depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../lif_checks.h"

namespace snnkernels {
namespace {

// out[0, len) += v * src[0, len); a function of its own so GCC trusts __restrict__ and
// vectorizes it.
template <typename T>
void axpy(T v, const T* __restrict__ src, T* __restrict__ out, int64_t len) {
  for (int64_t i = 0; i < len; ++i) out[i] += v * src[i];
}

// Row r's entries are [begin(r), end(r)) of values / indices: ELL (fixed k) or CSR.
struct Rows {
  const int64_t* row_ptr;  // nullptr: ELL
  int64_t k;
  int64_t begin(int64_t r) const { return row_ptr != nullptr ? row_ptr[r] : r * k; }
  int64_t end(int64_t r) const { return row_ptr != nullptr ? row_ptr[r + 1] : (r + 1) * k; }
};

template <typename T>
void grad_x_kernel(Rows rows, const T* values, const int32_t* indices, const T* weight,
                   T* grad_x, int64_t num_rows, int64_t f) {
  at::parallel_for(0, num_rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* out = grad_x + r * f;
      std::fill(out, out + f, T(0));
      for (int64_t e = rows.begin(r); e < rows.end(r); ++e) {
        axpy(values[e], weight + int64_t(indices[e]) * f, out, f);
      }
    }
  });
}

// Column n's (row, value) pairs in ascending row order: the transpose of the compact gradient.
template <typename T>
struct Columns {
  std::vector<int64_t> col_ptr;
  std::vector<int64_t> row;
  std::vector<T> value;
};

template <typename T>
Columns<T> transpose(Rows rows, const T* values, const int32_t* indices, int64_t num_rows,
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
      c.row[p] = r;
      c.value[p] = values[e];
    }
  }
  return c;
}

template <typename T>
void grad_weight_kernel(const Columns<T>& c, const T* x, T* grad_weight, T* grad_bias, int64_t n,
                        int64_t f) {
  at::parallel_for(0, n, 4, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      T bias_sum = T(0);
      T* out = grad_weight != nullptr ? grad_weight + j * f : nullptr;
      if (out != nullptr) std::fill(out, out + f, T(0));
      for (int64_t p = c.col_ptr[j]; p < c.col_ptr[j + 1]; ++p) {
        if (out != nullptr) axpy(c.value[p], x + c.row[p] * f, out, f);
        bias_sum += c.value[p];
      }
      if (grad_bias != nullptr) grad_bias[j] = bias_sum;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_sparse_backward_cpu(
    const at::Tensor& values, const at::Tensor& indices, const at::Tensor& row_ptr,
    const at::Tensor& x, const at::Tensor& weight, bool need_x, bool need_weight,
    bool need_bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "snnkernels: x must be contiguous [R, F]");
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.size(1) == x.size(1),
              "snnkernels: weight must be contiguous [N, F = ", x.size(1), "], got ",
              weight.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "snnkernels: on the CPU x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(values.scalar_type() == x.scalar_type() && weight.scalar_type() == x.scalar_type(),
              "snnkernels: values, x and weight must have the same dtype");
  TORCH_CHECK(indices.scalar_type() == at::kInt && indices.sizes() == values.sizes() &&
                  values.is_contiguous() && indices.is_contiguous(),
              "snnkernels: indices must be contiguous int32 with the shape of values");
  const int64_t num_rows = x.size(0), f = x.size(1), n = weight.size(0);
  Rows rows{nullptr, 0};
  if (row_ptr.numel() != 0) {
    TORCH_CHECK(row_ptr.scalar_type() == at::kLong && row_ptr.dim() == 1 &&
                    row_ptr.numel() == num_rows + 1 && values.dim() == 1,
                "snnkernels: CSR needs int64 row_ptr [R + 1 = ", num_rows + 1,
                "] and 1-D values");
    rows.row_ptr = row_ptr.data_ptr<int64_t>();
    TORCH_CHECK(rows.row_ptr[0] == 0 && rows.row_ptr[num_rows] == values.numel(),
                "snnkernels: row_ptr must start at 0 and end at nnz = ", values.numel());
  } else {
    TORCH_CHECK(values.dim() == 2 && values.size(0) == num_rows,
                "snnkernels: ELL values must be [R = ", num_rows, ", k], got ", values.sizes());
    rows.k = values.size(1);
  }
  if (indices.numel() != 0) {
    const auto lo = indices.min().item<int32_t>(), hi = indices.max().item<int32_t>();
    TORCH_CHECK(lo >= 0 && hi < n, "snnkernels: indices must be in [0, N = ", n, ")");
  }
  const auto opts = x.options();
  at::Tensor grad_x = empty_output({need_x ? num_rows : 0, f}, opts);
  at::Tensor grad_weight = empty_output({need_weight ? n : 0, f}, opts);
  at::Tensor grad_bias = empty_output({need_bias ? n : 0}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_sparse_backward_cpu", [&] {
    using T = scalar_t;
    const T* val = values.data_ptr<T>();
    const int32_t* idx = indices.data_ptr<int32_t>();
    if (need_x) {
      grad_x_kernel(rows, val, idx, weight.data_ptr<T>(), grad_x.data_ptr<T>(), num_rows, f);
    }
    if (need_weight || need_bias) {
      const Columns<T> cols = transpose(rows, val, idx, num_rows, n);
      grad_weight_kernel(cols, x.data_ptr<T>(), need_weight ? grad_weight.data_ptr<T>() : nullptr,
                         need_bias ? grad_bias.data_ptr<T>() : nullptr, n, f);
    }
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("linear_sparse_backward", &linear_sparse_backward_cpu);
}

}  // namespace snnkernels
