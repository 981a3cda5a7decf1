// Event-driven synapse for sparse inputs (binary spikes from an LIF layer, or any mostly-zero x),
// on the CPU: the work follows the nonzeros of x instead of a dense GEMM.
//   spike_linear:      out[r, :] = bias + sum over f with x[r, f] != 0, ascending, of
//                                  x[r, f] * W[:, f]                      (x [R, F], W [N, F])
//   spike_weight_grad: grad_W[:, f] = sum over r with x[r, f] != 0, ascending, of
//                                  x[r, f] * grad[r, :]                   (grad [R, N])
// Cost O(nnz(x) * N) against the GEMMs' O(R * F * N). linear_lif picks these over the GEMMs when
// the measured density of x is below kEventMaxDensity (event_linear.h; the crossover measured in
// benchmarks/results/event_cpu.md). Deterministic: every output row is summed by one task in a
// fixed order, so the bits do not depend on the thread count; they differ from the GEMM's in
// rounding only (another summation order).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "../event_linear.h"
#include "../lif_checks.h"

namespace snnkernels {
namespace {

// acc[0, n) += v * w[0, n): a function of its own so GCC trusts __restrict__ and vectorizes it.
template <typename T>
void axpy(T v, const T* __restrict__ w, T* __restrict__ acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += v * w[i];
}

void check_dense_2d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), "snnkernels: ", name, " must be contiguous 2-D, got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "snnkernels: on the CPU ", name, " must be float32 or float64, got ", t.scalar_type());
}

at::Tensor spike_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias) {
  check_dense_2d(x, "x");
  check_dense_2d(weight, "weight");
  TORCH_CHECK(weight.size(1) == x.size(1) && weight.scalar_type() == x.scalar_type(),
              "snnkernels: weight must be [N, F = ", x.size(1), "] of x's dtype, got ", weight.sizes());
  const int64_t rows = x.size(0), f = x.size(1), n = weight.size(0);
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == n && bias->is_contiguous() &&
                    bias->scalar_type() == x.scalar_type(),
                "snnkernels: bias must be contiguous [N = ", n, "] of x's dtype");
  }
  at::Tensor out = empty_output({rows, n}, x.options());
  if (out.numel() == 0) return out;
  const at::Tensor wt = weight.t().contiguous();  // [F, N]: the rows the events add
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spike_linear_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* wp = wt.data_ptr<T>();
    const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* acc = op + r * n;
        if (bp != nullptr) {
          std::copy(bp, bp + n, acc);
        } else {
          std::fill(acc, acc + n, T(0));
        }
        const T* xr = xp + r * f;
        for (int64_t j = 0; j < f; ++j) {
          if (xr[j] != T(0)) axpy(xr[j], wp + j * n, acc, n);
        }
      }
    });
  });
  return out;
}

at::Tensor spike_weight_grad_cpu(const at::Tensor& grad, const at::Tensor& x) {
  check_dense_2d(grad, "grad");
  check_dense_2d(x, "x");
  TORCH_CHECK(grad.size(0) == x.size(0) && grad.scalar_type() == x.scalar_type(),
              "snnkernels: grad [R, N] and x [R, F] need the same R and dtype, got ", grad.sizes(),
              " and ", x.sizes());
  const int64_t rows = x.size(0), f = x.size(1), n = grad.size(1);
  at::Tensor grad_wt = at::zeros({f, n}, x.options());  // [F, N]: row f sums the events of f
  if (grad_wt.numel() != 0 && rows != 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spike_weight_grad_cpu", [&] {
      using T = scalar_t;
      const T* xp = x.data_ptr<T>();
      const T* gp = grad.data_ptr<T>();
      T* wp = grad_wt.data_ptr<T>();
      // A task owns a range of features and walks all rows in order: each output row has one
      // owner that adds its terms in ascending r.
      at::parallel_for(0, f, 8, [&](int64_t f0, int64_t f1) {
        for (int64_t r = 0; r < rows; ++r) {
          const T* xr = xp + r * f;
          for (int64_t j = f0; j < f1; ++j) {
            if (xr[j] != T(0)) axpy(xr[j], gp + r * n, wp + j * n, n);
          }
        }
      });
    });
  }
  return grad_wt.t().contiguous();
}

}  // namespace

// Counting stops once the limit is passed (dense inputs, the common case, decide after a small
// part of x), and runs in parallel otherwise: torch.count_nonzero took 4 ms on [6400, 512],
// as long as the GEMM it was deciding about.
bool event_driven(const at::Tensor& x) {
  if (!x.is_cpu() || x.numel() == 0 || !at::isFloatingType(x.scalar_type())) return false;
  const at::Tensor xc = x.contiguous();
  const int64_t numel = xc.numel();
  const auto limit = static_cast<int64_t>(kEventMaxDensity * static_cast<double>(numel));
  std::atomic<int64_t> total{0};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "event_driven", [&] {
    const scalar_t* p = xc.data_ptr<scalar_t>();
    constexpr int64_t kBlock = 8192;
    at::parallel_for(0, numel, 4 * kBlock, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; s += kBlock) {
        if (total.load(std::memory_order_relaxed) > limit) return;
        const int64_t stop = std::min(end, s + kBlock);
        int64_t count = 0;
        for (int64_t i = s; i < stop; ++i) count += p[i] != scalar_t(0);
        total.fetch_add(count, std::memory_order_relaxed);
      }
    });
  });
  return total.load() <= limit;
}

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("event_driven", &event_driven);
  m.impl("spike_linear", &spike_linear_cpu);
  m.impl("spike_weight_grad", &spike_weight_grad_cpu);
}

}  // namespace snnkernels
