// Fused multi-step LIF forward and surrogate-gradient backward on the CPU, dense or with a
// sparse-gradient mask (snnkernels.sparse; docs/semantics.md).
//
// Layout: time-major [T, M]. Neurons are split into chunks (chunk_width); a chunk keeps its
// state (membrane, carry, parameter-gradient sums) in per-task arrays that stay in cache, walks
// time once, and its inner loop runs over contiguous neurons with no data-dependent branches, so
// GCC vectorizes it (this file is built with -fno-trapping-math: without it GCC 12 compiles the
// compare-selects to branches and does not vectorize). Chunks run in parallel with
// at::parallel_for; each neuron's sums are accumulated by one thread in time order, so results
// are the same bits for any thread count.
//
// Saved for backward (by the Python autograd, see snnkernels/_ops.py): with reset_delay=True only
// the returned membrane `mem` (one value, 4 bytes per element in float32; no extra memory when
// the caller keeps `mem`); with reset_delay=False also the pre-reset membrane (8 bytes per
// element in float32), since the same-step reset is not invertible (reset to zero forgets it).
//
// The masked backward walks the same way, with two differences:
// - chunks hold whole rows (a row = the N neurons of one (time step, sample) pair), because TopK
//   selects per row;
// - each step is split at g_h = dL/dh_t (lif_step_grad_h, then lif_step_grad_carry), and the mask
//   acts between the two, in the same pass: no dense gradient is written and re-read. TopK
//   without `temporal` carries the unmasked g_h, so its steps are the dense backward's rows
//   (backward_row), which write g_h for the selection.
// TopK: g_h of the row is computed densely, then the k largest |g_h| are selected (ties: lower
// index) and only they leave as dL/dx; with `temporal` the carry through time also sees the masked
// g_h. ActiveWindow: sigma' and g_h are zeroed outside |h - thr| < width, and the same-step reset
// is detached (kLeakOnly in lif_math.h).
// Its output: the masked dL/dx densely ([T, M], zeros elsewhere), or compact: TopK as ELL (values
// [R, k], int32 indices [R, k], ascending within a row), ActiveWindow as CSR (values [nnz], int32
// indices [nnz], int64 row_ptr [R + 1]), R = T * M / N rows. The CSR row sizes are counted from
// the saved membranes before the backward (which entries are active is known after the forward).
#include <torch/library.h>

#include <optional>

#include "lif_cpu_common.h"
#include "topk_select.h"

namespace snnkernels {
namespace {

using namespace cpu;

template <typename T, Reset R, bool kDelay>
void forward_kernel(const T* __restrict__ x, int64_t x_step, const T* __restrict__ mem0,
                    Params params, T* __restrict__ spk, T* __restrict__ mem, T* __restrict__ pre,
                    int64_t steps, int64_t m) {
  const int64_t width = chunk_width(m);
  const int64_t chunks = (m + width - 1) / width;
  const auto row_fn = params.uniform() ? forward_row<T, R, kDelay, true>
                                       : forward_row<T, R, kDelay, false>;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    Scratch<T> scratch(ChunkParams<T>::kArrays + 1, width);
    ChunkParams<T> cp(scratch);
    T* __restrict__ zeros = scratch.array(ChunkParams<T>::kArrays);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * width;
      const int64_t len = std::min(width, m - n0);
      cp.load(params, n0, len);
      const T* first_prev = mem0 != nullptr ? mem0 + n0 : zeros;
      if (mem0 == nullptr) std::fill(zeros, zeros + len, T(0));
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t off = t * m + n0;
        row_fn(x + t * x_step + n0, t > 0 ? mem + off - m : first_prev, mem + off,
               kDelay ? nullptr : pre + off, cp.beta_c, cp.thr, cp.graded, spk + off, len);
      }
    }
  });
}

struct MaskSpec {
  Mask kind;
  int64_t row;  // N: neurons per row; TopK selects within a row
  int64_t k;
  double width;
  bool temporal;
};

// g_h for one step of one chunk (first half of the split step; masked_step_grad_h in lif_math.h,
// shared with the CUDA kernels). With kWindow (ActiveWindow), `active` gets 1 where
// |h - thr| < width, else 0, and sigma' and g_h are 0 where inactive.
template <typename T, Surrogate S, Reset R, bool kDelay, bool kWindow>
void grad_h_row(const T* __restrict__ h, const T* __restrict__ u_prev,
                const T* __restrict__ g_spk, const T* __restrict__ g_mem,
                const T* __restrict__ thr, const T* __restrict__ graded, T p0, T p1, T width,
                const T* __restrict__ carry, T* __restrict__ g_h, T* __restrict__ thr_acc,
                T* __restrict__ d_graded, T* __restrict__ active, int64_t len) {
  for (int64_t i = 0; i < len; ++i) {
    bool on;
    const T g = masked_step_grad_h<S, R, kDelay, kWindow>(h[i], u_prev[i], g_spk[i], g_mem[i],
                                                          thr[i], graded[i], p0, p1, width,
                                                          carry[i], &thr_acc[i], &d_graded[i],
                                                          &on);
    g_h[i] = g;
    if constexpr (kWindow) active[i] = on ? T(1) : T(0);
  }
}

// Second half of the split step: the carry through time and the beta / threshold sums.
template <typename T, Reset R, bool kParamGrads>
void carry_row(const T* __restrict__ g_h, const T* __restrict__ u_prev,
               const T* __restrict__ beta_c, const T* __restrict__ thr,
               const T* __restrict__ thr_acc, T* __restrict__ carry, T* __restrict__ d_beta,
               T* __restrict__ d_thr, int64_t len) {
  for (int64_t i = 0; i < len; ++i) {
    if constexpr (kParamGrads) {
      lif_step_grad_carry<R>(g_h[i], u_prev[i], beta_c[i], thr[i], thr_acc[i], &carry[i],
                             &d_beta[i], &d_thr[i]);
    } else {
      T unused_beta = T(0), unused_thr = T(0);
      lif_step_grad_carry<R>(g_h[i], u_prev[i], beta_c[i], thr[i], thr_acc[i], &carry[i],
                             &unused_beta, &unused_thr);
    }
  }
}

template <typename T>
struct BackwardOut {
  T* grad_x;  // dense [T, M] (masked or not), or nullptr when compact
  T* values;
  int32_t* indices;
  const int64_t* row_ptr;  // CSR (ActiveWindow, compact); nullptr for ELL
};

// K: the mask (Mask::None: the dense backward).
template <typename T, Surrogate S, Reset R, bool kDelay, Mask K, bool kParamGrads>
void backward_kernel(const c10::optional<at::Tensor>& grad_spk,
                     const c10::optional<at::Tensor>& grad_mem, const T* __restrict__ mem,
                     const T* __restrict__ pre, const T* __restrict__ mem0, Params params, T p0,
                     T p1, const MaskSpec& spec, BackwardOut<T> out, T* __restrict__ grad_mem0,
                     T* __restrict__ grad_beta, T* __restrict__ grad_thr,
                     T* __restrict__ grad_graded, int64_t steps, int64_t m) {
  constexpr bool kDense = K == Mask::None, kWindow = K == Mask::ActiveWindow;
  const int64_t row = spec.row, k = spec.k;
  // Masked: whole rows, in chunks of up to max_masked_chunk() neurons (policy.h).
  const int64_t width =
      kDense ? chunk_width(m)
             : std::max<int64_t>(1, chunk_width(m, max_masked_chunk()) / row) * row;
  const int64_t chunks = (m + width - 1) / width;
  const T window = static_cast<T>(spec.width);
  // Dense, and TopK without `temporal` (it carries the unmasked g_h through time): one pass per
  // step (the dense row) instead of the split grad_h / carry pair.
  const bool fused_step = kDense || (!kWindow && !spec.temporal);
  const auto dense_row_fn = params.uniform()
                                ? backward_row<T, S, R, kDelay, kParamGrads, true>
                                : backward_row<T, S, R, kDelay, kParamGrads, false>;
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    constexpr int64_t kBase = ChunkParams<T>::kArrays;
    Scratch<T> scratch(kBase + (kDense ? 7 : 11), width);
    ChunkParams<T> cp(scratch);
    T* __restrict__ zeros = scratch.array(kBase);
    T* __restrict__ gs_local = scratch.array(kBase + 1);
    T* __restrict__ gm_local = scratch.array(kBase + 2);
    T* __restrict__ carry = scratch.array(kBase + 3);
    T* __restrict__ d_beta = scratch.array(kBase + 4);
    T* __restrict__ d_thr = scratch.array(kBase + 5);
    T* __restrict__ d_graded = scratch.array(kBase + 6);
    T* g_local = kDense ? nullptr : scratch.array(kBase + 7);
    T* thr_acc = kDense ? nullptr : scratch.array(kBase + 8);
    T* aux = kDense ? nullptr : scratch.array(kBase + 9);  // ActiveWindow: active flags
    T* masked_local = kDense ? nullptr : scratch.array(kBase + 10);
    std::vector<int32_t> sel(K == Mask::TopK ? k + 1 : 0);
    std::optional<TopKSelector<T>> selector;
    if constexpr (K == Mask::TopK) selector.emplace(row);
    std::vector<T> val_local(kWindow ? row + 1 : 0);
    std::vector<int32_t> idx_local(kWindow ? row + 1 : 0);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * width;
      const int64_t len = std::min(width, m - n0);
      cp.load(params, n0, len);
      const GradRows<T> gs = grad_rows(grad_spk, n0, len, gs_local);
      const GradRows<T> gm = grad_rows(grad_mem, n0, len, gm_local);
      std::fill(carry, carry + len, T(0));
      if constexpr (kParamGrads || !kDense) {  // the masked steps always accumulate
        std::fill(d_beta, d_beta + len, T(0));
        std::fill(d_thr, d_thr + len, T(0));
        std::fill(d_graded, d_graded + len, T(0));
      }
      const T* first_prev = mem0 != nullptr ? mem0 + n0 : zeros;
      if (mem0 == nullptr) std::fill(zeros, zeros + len, T(0));
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t off = t * m + n0;
        const T* u_prev = t > 0 ? mem + off - m : first_prev;
        const T* h = kDelay ? mem + off : pre + off;
        const T* g_spk = gs.base + t * gs.step;
        const T* g_mem = gm.base + t * gm.step;
        if constexpr (kDense) {
          dense_row_fn(h, u_prev, g_spk, g_mem, cp.beta_c, cp.thr, cp.graded, p0, p1,
                       out.grad_x + off, carry, d_beta, d_thr, d_graded, len);
          continue;
        }
        T* dense_row = out.grad_x != nullptr ? out.grad_x + off : nullptr;
        // ActiveWindow's g_h is already the masked gradient: write it to grad_x directly.
        T* g_h = (kWindow && dense_row != nullptr) ? dense_row : g_local;
        if (fused_step) {
          dense_row_fn(h, u_prev, g_spk, g_mem, cp.beta_c, cp.thr, cp.graded, p0, p1, g_h, carry,
                       d_beta, d_thr, d_graded, len);
        } else {
          grad_h_row<T, S, R, kDelay, kWindow>(h, u_prev, g_spk, g_mem, cp.thr, cp.graded, p0, p1,
                                               window, carry, g_h, thr_acc, d_graded, aux, len);
        }
        const T* carry_from = g_h;
        for (int64_t s = 0; s < len; s += row) {
          const int64_t r = (off + s) / row;  // global row index
          const T* g = g_h + s;
          if constexpr (kWindow) {
            if (dense_row != nullptr) continue;
            // Branch-free compaction into a local row (it may write one slot past the row's
            // entries), then a copy of exactly the row's entries.
            int64_t count = 0;
            for (int64_t i = 0; i < row; ++i) {
              val_local[count] = g[i];
              idx_local[count] = static_cast<int32_t>(i);
              count += aux[s + i] != T(0);
            }
            std::copy_n(val_local.data(), count, out.values + out.row_ptr[r]);
            std::copy_n(idx_local.data(), count, out.indices + out.row_ptr[r]);
          } else {
            select_topk(*selector, g, row, k, sel.data());
            if (out.values != nullptr) {
              for (int64_t j = 0; j < k; ++j) {
                out.values[r * k + j] = g[sel[j]];
                out.indices[r * k + j] = sel[j];
              }
            }
            if (dense_row != nullptr || spec.temporal) {
              T* masked = dense_row != nullptr ? dense_row + s : masked_local + s;
              std::fill(masked, masked + row, T(0));
              for (int64_t j = 0; j < k; ++j) masked[sel[j]] = g[sel[j]];
            }
          }
        }
        if (fused_step) continue;
        if (!kWindow && spec.temporal) {
          carry_from = dense_row != nullptr ? dense_row : masked_local;
        }
        carry_row<T, R, kParamGrads>(carry_from, u_prev, cp.beta_c, cp.thr, thr_acc, carry,
                                     d_beta, d_thr, len);
      }
      store_chunk_grads(cp, carry, d_beta, d_thr, d_graded, kParamGrads, n0, len, grad_mem0,
                        grad_beta, grad_thr, grad_graded);
    }
  });
}

// ActiveWindow's CSR row pointers: entries with |h - thr| < width, counted per row from the
// saved membranes (the same comparison grad_h_row makes).
template <typename T>
at::Tensor count_active(const T* h, Param threshold, double width, int64_t steps, int64_t m,
                        int64_t row) {
  const int64_t rows_per_step = m / row, rows = steps * rows_per_step;
  at::Tensor row_ptr = at::empty({rows + 1}, at::TensorOptions().dtype(at::kLong));
  int64_t* rp = row_ptr.data_ptr<int64_t>();
  const T w = static_cast<T>(width);
  rp[0] = 0;
  at::parallel_for(0, rows_per_step, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> thr(row);
    for (int64_t b = b0; b < b1; ++b) {
      load_chunk(threshold, b * row, row, thr.data());
      for (int64_t t = 0; t < steps; ++t) {
        const T* hr = h + t * m + b * row;
        int64_t count = 0;
        for (int64_t i = 0; i < row; ++i) count += window_active(hr[i], thr[i], w);
        rp[t * rows_per_step + b + 1] = count;
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) rp[r + 1] += rp[r];
  return row_ptr;
}

at::Tensor count_active_rows(const at::Tensor& mem, const at::Tensor& pre_reset,
                             const at::Tensor& threshold, double width, int64_t row,
                             bool reset_delay) {
  at::Tensor row_ptr;
  AT_DISPATCH_FLOATING_TYPES(mem.scalar_type(), "count_active", [&] {
    const at::Tensor& h = reset_delay ? mem : pre_reset;
    row_ptr = count_active(h.data_ptr<scalar_t>(), Param{threshold.data_ptr(), threshold.numel()},
                           width, mem.size(0), mem.size(1), row);
  });
  return row_ptr;
}

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Triple lif_forward_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& mem0,
                       const at::Tensor& beta, const at::Tensor& threshold,
                       const at::Tensor& graded, int64_t /*surrogate*/, double /*p0*/,
                       double /*p1*/, int64_t reset, bool reset_delay) {
  TORCH_CHECK(x.dim() == 2, "snnkernels: x must be [T, M], got ", x.sizes());
  check_cpu_dtype(x);
  const int64_t steps = x.size(0), m = x.size(1);
  // Contiguous, or one row broadcast over time (stride 0 over T: a constant input current, as
  // TabularSNN's direct encoder gives), read in place instead of copied T times.
  const bool rows_contiguous = m <= 1 || x.stride(1) == 1;
  const bool broadcast = rows_contiguous && steps > 1 && x.stride(0) == 0;
  TORCH_CHECK(x.is_contiguous() || broadcast,
              "snnkernels: x must be contiguous [T, M] or one contiguous row broadcast over T, "
              "got strides ", x.strides());
  const int64_t x_step = broadcast ? 0 : m;
  check_state(mem0, x);
  check_param(beta, "beta", x, m);
  check_param(threshold, "threshold", x, m);
  check_param(graded, "graded", x, m);
  at::Tensor spk = empty_output(x.sizes(), x.options());
  at::Tensor mem = empty_output(x.sizes(), x.options());
  at::Tensor pre = empty_output(reset_delay ? at::IntArrayRef{0} : x.sizes(), x.options());
  if (x.numel() == 0) return {spk, mem, pre};
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward_cpu", [&] {
    const scalar_t* mem0_ptr = mem0.has_value() ? mem0->data_ptr<scalar_t>() : nullptr;
    dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
      forward_kernel<scalar_t, decltype(r)::value, decltype(delay)::value>(
          x.data_ptr<scalar_t>(), x_step, mem0_ptr, params, spk.data_ptr<scalar_t>(),
          mem.data_ptr<scalar_t>(), reset_delay ? nullptr : pre.data_ptr<scalar_t>(), steps, m);
    });
  });
  return {spk, mem, pre};
}

using Octet = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor>;

// Both backward ops: lif_backward (masked false: the mask arguments are unused) and
// lif_backward_masked.
Octet backward_cpu(const c10::optional<at::Tensor>& grad_spk,
                   const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem,
                   const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
                   const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
                   int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay,
                   bool param_grads, bool masked, int64_t mask, int64_t row, int64_t k,
                   double width, bool temporal, bool compact) {
  TORCH_CHECK(mem.dim() == 2 && mem.is_contiguous(), "snnkernels: mem must be contiguous [T, M]");
  check_cpu_dtype(mem);
  const int64_t steps = mem.size(0), m = mem.size(1);
  check_backward_args(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                      reset_delay);
  const MaskSpec spec{!masked ? Mask::None : check_mask_args(mask, row, k, width, m), row, k,
                      width, temporal};
  const bool window = spec.kind == Mask::ActiveWindow;
  const int64_t rows = steps * (m / row);
  const auto opts = mem.options();
  const auto idx_opts = opts.dtype(at::kInt);
  at::Tensor grad_x = empty_output(compact ? at::IntArrayRef{0} : mem.sizes(), opts);
  at::Tensor row_ptr = at::empty({0}, opts.dtype(at::kLong));
  at::Tensor values, indices;
  if (!compact) {
    values = at::empty({0}, opts);
    indices = at::empty({0}, idx_opts);
  } else if (window) {
    row_ptr = count_active_rows(mem, pre_reset, threshold, width, row, reset_delay);
    const int64_t nnz = row_ptr.data_ptr<int64_t>()[rows];
    values = empty_output({nnz}, opts);
    indices = at::empty({nnz}, idx_opts);
  } else {
    values = empty_output({rows, k}, opts);
    indices = at::empty({rows, k}, idx_opts);
  }
  NeuronGrads g(m, opts, opts, param_grads);
  if (m == 0 || steps == 0) {
    g.set_empty_result(param_grads, beta, threshold, graded);
    return {grad_x, g.mem0, g.beta, g.threshold, g.graded, values, indices, row_ptr};
  }
  const Params params = params_of(beta, threshold, graded);
  AT_DISPATCH_FLOATING_TYPES(mem.scalar_type(), "lif_backward_cpu", [&] {
    using T = scalar_t;
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    T* gb = param_grads ? g.beta.data_ptr<T>() : nullptr;
    T* gt = param_grads ? g.threshold.data_ptr<T>() : nullptr;
    T* gg = param_grads ? g.graded.data_ptr<T>() : nullptr;
    const BackwardOut<T> out{compact ? nullptr : grad_x.data_ptr<T>(),
                             compact ? values.data_ptr<T>() : nullptr,
                             compact ? indices.data_ptr<int32_t>() : nullptr,
                             compact && window ? row_ptr.data_ptr<int64_t>() : nullptr};
    dispatch_backward(surrogate, reset, reset_delay, param_grads, [&](auto s, auto r, auto delay,
                                                                      auto with_params) {
      dispatch_mask(spec.kind, [&](auto kind) {
        backward_kernel<T, decltype(s)::value, decltype(r)::value, decltype(delay)::value,
                        decltype(kind)::value, decltype(with_params)::value>(
            grad_spk, grad_mem, mem.data_ptr<T>(), reset_delay ? nullptr : pre_reset.data_ptr<T>(),
            mem0_ptr, params, static_cast<T>(p0), static_cast<T>(p1), spec, out,
            g.mem0.data_ptr<T>(), gb, gt, gg, steps, m);
      });
    });
  });
  g.reduce_params(param_grads, reduce_periodic, beta, threshold, graded);
  return {grad_x, g.mem0, g.beta, g.threshold, g.graded, values, indices, row_ptr};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_backward_cpu(
    const c10::optional<at::Tensor>& grad_spk, const c10::optional<at::Tensor>& grad_mem,
    const at::Tensor& mem, const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
    const at::Tensor& beta, const at::Tensor& threshold, const at::Tensor& graded,
    int64_t surrogate, double p0, double p1, int64_t reset, bool reset_delay, bool param_grads) {
  const Octet g = backward_cpu(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                               surrogate, p0, p1, reset, reset_delay, param_grads, /*masked=*/false,
                               0, /*row=*/1, 0, 0.0, false, false);
  return {std::get<0>(g), std::get<1>(g), std::get<2>(g), std::get<3>(g), std::get<4>(g)};
}

Octet lif_backward_masked_cpu(const c10::optional<at::Tensor>& grad_spk,
                              const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem,
                              const at::Tensor& pre_reset, const c10::optional<at::Tensor>& mem0,
                              const at::Tensor& beta, const at::Tensor& threshold,
                              const at::Tensor& graded, int64_t surrogate, double p0, double p1,
                              int64_t reset, bool reset_delay, bool param_grads, int64_t mask,
                              int64_t row, int64_t k, double width, bool temporal,
                              bool compact) {
  return backward_cpu(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                      surrogate, p0, p1, reset, reset_delay, param_grads, /*masked=*/true,
                      mask, row, k, width, temporal, compact);
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
  m.impl("lif_backward_masked", &lif_backward_masked_cpu);
}

}  // namespace snnkernels
