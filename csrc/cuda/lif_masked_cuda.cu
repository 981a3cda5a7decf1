// The LIF backward with a sparse-gradient mask (snnkernels.sparse; docs/semantics.md), on CUDA.
// The CPU version is in csrc/cpu/lif_cpu.cpp; both take the per-element math from
// lif_math.h (masked_step_grad_h, lif_step_grad_carry, window_active, topk_rank_key), so the
// float32/float64 results are the CPU's bits wherever the surrogate uses no exp (the ATan default,
// FastSigmoid, Triangular, StraightThrough, Heaviside; nvcc runs with --fmad=false like the CPU
// build's -ffp-contract=off); Sigmoid / SpikeRateEscape differ by expf's last-bit rounding.
//
// Design (one thread per neuron walking time backwards, as lif_cuda.cu):
// - ActiveWindow: the mask is elementwise, so one neuron-parallel walk computes the masked
//   gradient for every step. compact=False writes it to grad_x. compact=True (CSR): the active
//   entries of every row are counted first (one block per row, from the saved membranes with the
//   same window_active test), row_ptr = the exclusive scan of the counts (at::cumsum), then the
//   walk writes the masked gradient to a dense [T, M] scratch and one block per row compacts the
//   active entries in index order (block scans). Extra memory: the scratch, T*M*itemsize.
// - TopK, temporal=False: the carry through time uses the unmasked g_h, so one neuron-parallel
//   walk writes the dense g_h of every step to a [T, M] accumulation-type scratch (the extra
//   memory: T*M*4 bytes, 8 for float64), then one block per row selects its k entries.
// - TopK, temporal=True: the carry at step t - 1 needs the masked g_h of step t, i.e. the
//   selection of all N neurons of a row, inside the time loop. So the host loops over t with
//   two launches per step: (a) neuron-parallel: the carry update of step t + 1 from its masked
//   g_h, then g_h of step t into an [M] buffer; (b) one block per row: select, mask the buffer in
//   place, write the outputs. Cost: 2*T + 1 launches (a few microseconds each) and every step's
//   state goes through global memory (carry, parameter partials: 5 [M] accumulation-type
//   buffers, L2-resident for moderate M) instead of registers.
// Selection (lif_topk_select_kernel): the k-th largest key tau of the row by an 8-bit radix select
// (4 passes over the row for float keys, 8 for double; 256-bin shared histograms, whose integer
// atomics give the same counts in any order; a block scan over the bins picks each digit), then
// one pass in index order with block scans takes every key > tau and the first
// (k - #keys > tau) keys == tau: exactly the CPU TopKSelector's
// choice (ties to the lower index, NaN ranks as +inf, -0.0 as 0.0). The half types select on the
// float32 g_h before it is rounded to the output type. k >= row keeps the whole row.
//
// Determinism: every output value is computed by one thread in a fixed order; the parameter
// gradients are per-neuron partial sums over time [M] reduced by lif_cuda.cu's column_sums (a
// fixed tree in double): the same bits on every run and launch configuration. No atomics on
// floating-point values. What is saved for the backward is the same as the dense op's (mem,
// and pre_reset with reset_delay=False): the masks need nothing more.
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <type_traits>

#include "lif_cuda_common.cuh"

namespace snnkernels {
namespace {

using namespace gpu;

constexpr int kWalkThreads = 256;   // neuron-parallel kernels
constexpr int kRowThreads = 256;    // one block per row (selection, counts, CSR fill)
static_assert(kRowThreads == 256, "the TopK radix select gives each of the 256 bins a thread");
constexpr int64_t kMaxRowBlocks = int64_t(1) << 20;  // row kernels loop over the rest

unsigned walk_blocks(int64_t m) { return static_cast<unsigned>(ceil_div(m, kWalkThreads)); }
unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(rows, kMaxRowBlocks));
}

template <typename A>
using KeyOf = std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t>;

// The whole-sequence walk: ActiveWindow (kWindow) and TopK with temporal=False. Writes the step's
// g_h (masked for ActiveWindow) to out_t (the output type) or out_a (the accumulation type), and
// the carry / parameter partials at the end, like lif_cuda.cu's lif_backward_kernel.
template <typename T, typename A, Surrogate S, Reset R, bool kDelay, bool kWindow>
__global__ void __launch_bounds__(kWalkThreads)
    lif_masked_walk_kernel(GradRows<T> grad_spk, GradRows<T> grad_mem, const T* __restrict__ mem,
                           const T* __restrict__ pre, const T* __restrict__ mem0, Params<A> params,
                           A p0, A p1, A width, T* __restrict__ out_t, A* __restrict__ out_a,
                           T* __restrict__ grad_mem0, A* __restrict__ grad_beta,
                           A* __restrict__ grad_thr, A* __restrict__ grad_graded, int64_t steps,
                           int64_t m) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWalkThreads + threadIdx.x;
  if (n >= m) return;
  const A beta_raw = params.beta.at(n);
  const A beta_c = clamp01(beta_raw);
  const A thr = params.threshold.at(n);
  const A graded = params.graded.at(n);
  const A first_prev = mem0 != nullptr ? static_cast<A>(mem0[n]) : A(0);
  A carry = A(0), d_beta = A(0), d_thr = A(0), d_graded = A(0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t off = t * m + n;
    const A h = static_cast<A>(kDelay ? mem[off] : pre[off]);
    const A u_prev = t > 0 ? static_cast<A>(mem[off - m]) : first_prev;
    A thr_acc;
    bool on;
    const A g = masked_step_grad_h<S, R, kDelay, kWindow>(
        h, u_prev, load_grad<T, A>(grad_spk, t, n), load_grad<T, A>(grad_mem, t, n), thr, graded,
        p0, p1, width, carry, &thr_acc, &d_graded, &on);
    if (out_t != nullptr) out_t[off] = static_cast<T>(g);
    if (out_a != nullptr) out_a[off] = g;
    lif_step_grad_carry<R>(g, u_prev, beta_c, thr, thr_acc, &carry, &d_beta, &d_thr);
  }
  grad_mem0[n] = static_cast<T>(carry);
  if (grad_beta != nullptr) {
    grad_beta[n] = d_beta * clamp01_grad(beta_raw);
    grad_thr[n] = d_thr;
    grad_graded[n] = d_graded;
  }
}

// State of the temporal TopK walk between launches, per neuron [M], accumulation type.
template <typename A>
struct StepState {
  A* g_h;      // g_h of the last computed step; masked in place by the selection
  A* thr_acc;  // lif_step_grad_h's threshold term of that step
  A* carry;
  A* d_beta;
  A* d_thr;
  A* d_graded;
};

// One step of the temporal TopK walk, t from steps - 1 down to -1: first the second half of step
// t + 1 (carry and beta / threshold terms from its masked g_h), then g_h of step t (t >= 0), or,
// at t = -1, the stores of grad_mem0 and the parameter partials.
template <typename T, typename A, Surrogate S, Reset R, bool kDelay>
__global__ void __launch_bounds__(kWalkThreads)
    lif_topk_temporal_step_kernel(GradRows<T> grad_spk, GradRows<T> grad_mem,
                                  const T* __restrict__ mem, const T* __restrict__ pre,
                                  const T* __restrict__ mem0, Params<A> params, A p0, A p1,
                                  StepState<A> st, T* __restrict__ grad_mem0,
                                  A* __restrict__ grad_beta, A* __restrict__ grad_thr,
                                  A* __restrict__ grad_graded, int64_t t, int64_t steps,
                                  int64_t m) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWalkThreads + threadIdx.x;
  if (n >= m) return;
  const A beta_c = clamp01(params.beta.at(n));
  const A thr = params.threshold.at(n);
  const A first_prev = mem0 != nullptr ? static_cast<A>(mem0[n]) : A(0);
  A carry = st.carry[n];
  if (t + 1 < steps) {  // finish step t + 1; its u_prev is what step t returned
    const A u_prev = t >= 0 ? static_cast<A>(mem[t * m + n]) : first_prev;
    A d_beta = st.d_beta[n], d_thr = st.d_thr[n];
    lif_step_grad_carry<R>(st.g_h[n], u_prev, beta_c, thr, st.thr_acc[n], &carry, &d_beta,
                           &d_thr);
    st.carry[n] = carry;
    st.d_beta[n] = d_beta;
    st.d_thr[n] = d_thr;
  }
  if (t >= 0) {
    const int64_t off = t * m + n;
    const A h = static_cast<A>(kDelay ? mem[off] : pre[off]);
    const A u_prev = t > 0 ? static_cast<A>(mem[off - m]) : first_prev;
    A thr_acc, d_graded = st.d_graded[n];
    bool on;
    st.g_h[n] = masked_step_grad_h<S, R, kDelay, false>(
        h, u_prev, load_grad<T, A>(grad_spk, t, n), load_grad<T, A>(grad_mem, t, n), thr,
        params.graded.at(n), p0, p1, A(0), carry, &thr_acc, &d_graded, &on);
    st.thr_acc[n] = thr_acc;
    st.d_graded[n] = d_graded;
    return;
  }
  grad_mem0[n] = static_cast<T>(carry);
  if (grad_beta != nullptr) {
    grad_beta[n] = st.d_beta[n] * clamp01_grad(params.beta.at(n));
    grad_thr[n] = st.d_thr[n];
    grad_graded[n] = st.d_graded[n];
  }
}

// TopK of every row: row r (local) is g[r * row, (r + 1) * row). Outputs (each optional):
// masked: g with the unselected entries zeroed (may alias g), dense: the masked row in the output
// type (row r at dense + r * row), values / indices: ELL rows row0 + r, ascending indices.
template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
    lif_topk_select_kernel(const A* g, A* masked, T* __restrict__ dense, T* __restrict__ values,
                           int32_t* __restrict__ indices, int64_t rows, int64_t row, int64_t k,
                           int64_t row0) {
  using Key = KeyOf<A>;
  using Scan = cub::BlockScan<int64_t, kRowThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ unsigned int hist[256];
  __shared__ int64_t sel_digit, sel_rank;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const A* gr = g + r * row;
    Key tau = 0;
    int64_t ties = row;  // k >= row: every key >= 0 = tau is taken
    if (k < row) {
      // Radix select of the k-th largest key: digits from the top; `rank` is the rank of the
      // wanted key among the keys that match the digits chosen so far.
      Key prefix = 0, prefix_mask = 0;
      int64_t rank = k;
      for (int shift = int(sizeof(Key)) * 8 - 8; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += kRowThreads) hist[b] = 0u;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < row; i += kRowThreads) {
          const Key key = topk_rank_key(gr[i]);
          if ((key & prefix_mask) == prefix) {
            atomicAdd(&hist[static_cast<int>((key >> shift) & Key(255))], 1u);
          }
        }
        __syncthreads();
        {
          // The digit holding the rank-th largest key: thread t owns bin d = 255 - t, and a
          // block scan gives the count of keys in bins >= d; the bin where that count first
          // reaches `rank` is chosen (bin 0 when none does). One scan instead of a serial walk
          // over up to 256 bins by one thread.
          const int d = 255 - static_cast<int>(threadIdx.x);
          const int64_t count = hist[d];
          int64_t upto;
          Scan(scan_storage).InclusiveSum(count, upto);
          const int64_t above = upto - count;
          if (above < rank && (rank <= upto || d == 0)) {
            sel_digit = d;
            sel_rank = rank - above;
          }
        }
        __syncthreads();
        prefix |= static_cast<Key>(sel_digit) << shift;
        prefix_mask |= Key(255) << shift;
        rank = sel_rank;
        __syncthreads();  // sel_* and hist are rewritten by the next pass
      }
      tau = prefix;
      ties = rank;  // keys > tau: k - rank of them; the first `rank` keys == tau complete k
    }
    // In index order: take key > tau, and key == tau while fewer than `ties` were taken.
    int64_t eq_before = 0, taken_before = 0;
    for (int64_t base = 0; base < row; base += kRowThreads) {
      const int64_t i = base + threadIdx.x;
      const bool inside = i < row;
      const A v = inside ? gr[i] : A(0);
      const Key key = topk_rank_key(v);
      const bool gt = inside && key > tau;
      const bool eq = inside && key == tau;
      int64_t eq_rank, eq_total;
      Scan(scan_storage).ExclusiveSum(int64_t(eq), eq_rank, eq_total);
      __syncthreads();
      const bool take = gt || (eq && eq_before + eq_rank < ties);
      int64_t pos, take_total;
      Scan(scan_storage).ExclusiveSum(int64_t(take), pos, take_total);
      __syncthreads();
      if (inside) {
        if (masked != nullptr) masked[r * row + i] = take ? v : A(0);
        if (dense != nullptr) dense[r * row + i] = static_cast<T>(take ? v : A(0));
        if (take && values != nullptr) {
          const int64_t e = (row0 + r) * k + taken_before + pos;
          values[e] = static_cast<T>(v);
          indices[e] = static_cast<int32_t>(i);
        }
      }
      eq_before += eq_total;
      taken_before += take_total;
    }
  }
}

// ActiveWindow CSR: the active entries of each row (the test masked_step_grad_h makes).
template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
    lif_window_count_kernel(const T* __restrict__ h, Param<A> threshold, A width,
                            int64_t* __restrict__ counts, int64_t rows, int64_t row, int64_t m) {
  using Reduce = cub::BlockReduce<int64_t, kRowThreads>;
  __shared__ typename Reduce::TempStorage storage;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t start = r * row;  // = t * m + neuron of the row's first entry
    int64_t count = 0;
    for (int64_t i = threadIdx.x; i < row; i += kRowThreads) {
      const int64_t n = (start + i) % m;
      count += window_active(static_cast<A>(h[start + i]), threshold.at(n), width) ? 1 : 0;
    }
    const int64_t total = Reduce(storage).Sum(count);
    if (threadIdx.x == 0) counts[r] = total;
    __syncthreads();  // storage is reused by the next row
  }
}

// The active entries of each row of the dense masked gradient, in index order, into the CSR.
template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
    lif_window_csr_fill_kernel(const T* __restrict__ h, Param<A> threshold, A width,
                               const T* __restrict__ dense, const int64_t* __restrict__ row_ptr,
                               T* __restrict__ values, int32_t* __restrict__ indices, int64_t rows,
                               int64_t row, int64_t m) {
  using Scan = cub::BlockScan<int64_t, kRowThreads>;
  __shared__ typename Scan::TempStorage storage;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t start = r * row;
    int64_t next = row_ptr[r];
    for (int64_t base = 0; base < row; base += kRowThreads) {
      const int64_t i = base + threadIdx.x;
      bool on = false;
      if (i < row) {
        const int64_t n = (start + i) % m;
        on = window_active(static_cast<A>(h[start + i]), threshold.at(n), width);
      }
      int64_t pos, total;
      Scan(storage).ExclusiveSum(int64_t(on), pos, total);
      __syncthreads();
      if (on) {
        values[next + pos] = dense[start + i];
        indices[next + pos] = static_cast<int32_t>(i);
      }
      next += total;
    }
  }
}

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                           at::Tensor, at::Tensor>;

Outputs lif_backward_masked_cuda(const c10::optional<at::Tensor>& grad_spk,
                                 const c10::optional<at::Tensor>& grad_mem, const at::Tensor& mem,
                                 const at::Tensor& pre_reset,
                                 const c10::optional<at::Tensor>& mem0, const at::Tensor& beta,
                                 const at::Tensor& threshold, const at::Tensor& graded,
                                 int64_t surrogate, double p0, double p1, int64_t reset,
                                 bool reset_delay, bool param_grads, int64_t mask, int64_t row,
                                 int64_t k, double width, bool temporal, bool compact) {
  check_cuda_input(mem, "mem");
  const int64_t steps = mem.size(0), m = mem.size(1);
  check_backward_args(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                      reset_delay);
  const Mask kind = check_mask_args(mask, row, k, width, m);
  const c10::cuda::CUDAGuard guard(mem.device());
  const bool window = kind == Mask::ActiveWindow;
  const int64_t rows_per_step = m / row, rows = steps * rows_per_step;
  const auto opts = mem.options();
  const auto acc = opts.dtype(accumulation_dtype(mem.scalar_type()));
  const auto idx_opts = opts.dtype(at::kInt);
  at::Tensor grad_x = empty_output(compact ? at::IntArrayRef{0} : mem.sizes(), opts);
  at::Tensor row_ptr = at::empty({0}, opts.dtype(at::kLong));
  at::Tensor values, indices;
  const at::Tensor& h_saved = reset_delay ? mem : pre_reset;
  if (!compact) {
    values = at::empty({0}, opts);
    indices = at::empty({0}, idx_opts);
  } else if (window) {
    row_ptr = at::zeros({rows + 1}, opts.dtype(at::kLong));
    if (rows > 0) {
      at::Tensor counts = at::empty({rows}, opts.dtype(at::kLong));
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mem.scalar_type(),
                                      "count_active_cuda", [&] {
        using A = at::acc_type<scalar_t, /*is_cuda=*/true>;
        lif_window_count_kernel<scalar_t, A>
            <<<row_blocks(rows), kRowThreads, 0, current_stream()>>>(
            h_saved.data_ptr<scalar_t>(), Param<A>{threshold.data_ptr<A>(), threshold.numel()},
            static_cast<A>(width), counts.data_ptr<int64_t>(), rows, row, m);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      row_ptr.narrow(0, 1, rows).copy_(at::cumsum(counts, 0));
    }
    const int64_t nnz = rows > 0 ? row_ptr[rows].item<int64_t>() : 0;
    values = empty_output({nnz}, opts);
    indices = at::empty({nnz}, idx_opts);
  } else {
    values = empty_output({rows, k}, opts);
    indices = at::empty({rows, k}, idx_opts);
  }
  NeuronGrads g(m, opts, acc, param_grads);
  if (m == 0 || steps == 0) {
    g.set_empty_result(param_grads, beta, threshold, graded);
    return {grad_x, g.mem0, g.beta, g.threshold, g.graded, values, indices, row_ptr};
  }
  at::Tensor &grad_mem0 = g.mem0, &grad_beta = g.beta, &grad_thr = g.threshold,
             &grad_graded = g.graded;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mem.scalar_type(),
                                  "lif_backward_masked_cuda", [&] {
    using T = scalar_t;
    using A = at::acc_type<T, /*is_cuda=*/true>;
    const Params<A> params = params_of<A>(beta, threshold, graded);
    const T* mem0_ptr = mem0.has_value() ? mem0->data_ptr<T>() : nullptr;
    const T* pre_ptr = reset_delay ? nullptr : pre_reset.data_ptr<T>();
    A* gb = param_grads ? grad_beta.data_ptr<A>() : nullptr;
    A* gt = param_grads ? grad_thr.data_ptr<A>() : nullptr;
    A* gg = param_grads ? grad_graded.data_ptr<A>() : nullptr;
    const GradRows<T> gs = grad_rows<T>(grad_spk, m), gm = grad_rows<T>(grad_mem, m);
    const A a_p0 = static_cast<A>(p0), a_p1 = static_cast<A>(p1);
    const A a_width = static_cast<A>(width);
    T* values_ptr = compact ? values.data_ptr<T>() : nullptr;
    int32_t* indices_ptr = compact ? indices.data_ptr<int32_t>() : nullptr;
    dispatch_surrogate(surrogate, [&](auto s) {
      dispatch_reset(reset, reset_delay, [&](auto r, auto delay) {
        constexpr Surrogate kS = decltype(s)::value;
        constexpr Reset kR = decltype(r)::value;
        constexpr bool kD = decltype(delay)::value;
        if (window) {
          // The masked gradient, densely: to grad_x, or to a scratch the CSR is filled from.
          at::Tensor dense = compact ? at::empty(mem.sizes(), opts) : grad_x;
          lif_masked_walk_kernel<T, A, kS, kR, kD, true>
              <<<walk_blocks(m), kWalkThreads, 0, current_stream()>>>(
                  gs, gm, mem.data_ptr<T>(), pre_ptr, mem0_ptr, params, a_p0, a_p1, a_width,
                  dense.data_ptr<T>(), nullptr, grad_mem0.data_ptr<T>(), gb, gt, gg, steps, m);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          if (compact && rows > 0) {
            lif_window_csr_fill_kernel<T, A>
                <<<row_blocks(rows), kRowThreads, 0, current_stream()>>>(
                h_saved.data_ptr<T>(), params.threshold, a_width, dense.data_ptr<T>(),
                row_ptr.data_ptr<int64_t>(), values_ptr, indices_ptr, rows, row, m);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        } else if (!temporal) {
          // Dense g_h of every step (the carry uses the unmasked one), then the selection.
          at::Tensor g_h = at::empty(mem.sizes(), acc);
          lif_masked_walk_kernel<T, A, kS, kR, kD, false>
              <<<walk_blocks(m), kWalkThreads, 0, current_stream()>>>(
                  gs, gm, mem.data_ptr<T>(), pre_ptr, mem0_ptr, params, a_p0, a_p1, a_width,
                  nullptr, g_h.data_ptr<A>(), grad_mem0.data_ptr<T>(), gb, gt, gg, steps, m);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          lif_topk_select_kernel<T, A><<<row_blocks(rows), kRowThreads, 0, current_stream()>>>(
              g_h.data_ptr<A>(), nullptr, compact ? nullptr : grad_x.data_ptr<T>(), values_ptr,
              indices_ptr, rows, row, k, 0);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else {
          // Temporal: select inside the time loop, one step at a time.
          at::Tensor state = at::zeros({6, m}, acc);
          A* base = state.data_ptr<A>();
          const StepState<A> st{base, base + m, base + 2 * m, base + 3 * m, base + 4 * m,
                                base + 5 * m};
          for (int64_t t = steps - 1; t >= -1; --t) {
            lif_topk_temporal_step_kernel<T, A, kS, kR, kD>
                <<<walk_blocks(m), kWalkThreads, 0, current_stream()>>>(
                    gs, gm, mem.data_ptr<T>(), pre_ptr, mem0_ptr, params, a_p0, a_p1, st,
                    grad_mem0.data_ptr<T>(), gb, gt, gg, t, steps, m);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
            if (t < 0) break;
            lif_topk_select_kernel<T, A>
                <<<row_blocks(rows_per_step), kRowThreads, 0, current_stream()>>>(
                    st.g_h, st.g_h, compact ? nullptr : grad_x.data_ptr<T>() + t * m, values_ptr,
                    indices_ptr, rows_per_step, row, k, t * rows_per_step);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        }
      });
    });
  });
  g.reduce_params(param_grads, column_sums, beta, threshold, graded);
  return {grad_x, g.mem0, g.beta, g.threshold, g.graded, values, indices, row_ptr};
}

}  // namespace

TORCH_LIBRARY_IMPL(snnkernels, CUDA, m) {
  m.impl("lif_backward_masked", &lif_backward_masked_cuda);
}

}  // namespace snnkernels
