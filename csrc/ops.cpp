// The one place the op schemas are declared. Kernels register implementations per device in
// cpu/ and cuda/; autograd and fake (meta) implementations live in Python (snnkernels/_ops.py).
#include <torch/library.h>

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "cpu/output_pool.h"
#include "cpu/policy.h"
#include "empty_output.h"

#ifndef SNNKERNELS_TORCH_VERSION
#define SNNKERNELS_TORCH_VERSION "unknown"
#endif
#ifndef SNNKERNELS_CUDA_ARCHS
#define SNNKERNELS_CUDA_ARCHS ""
#endif

#ifdef SNNKERNELS_PYTHON_MODULE
#include <Python.h>
// Importing snnkernels._C as a Python module loads this library, which runs the static
// registrations below. The module itself is empty. (CMake builds for C++ users omit this.)
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

namespace snnkernels {

static std::atomic<bool> poison_outputs{false};

bool debug_poison_enabled() { return poison_outputs.load(std::memory_order_relaxed); }

static void set_debug_poison(bool enabled) { poison_outputs.store(enabled); }

static std::vector<int64_t> cpu_cache_info() {
  const PoolStats s = pool_stats();
  return {s.cached_bytes, s.limit_bytes, s.hits, s.misses};
}

// A JSON object; parsed by snnkernels.build_info().
static std::string build_info() {
  std::string info = "{\"torch\": \"" SNNKERNELS_TORCH_VERSION "\", \"cuda\": ";
#ifdef SNNKERNELS_WITH_CUDA
  info += "true, \"cuda_archs\": \"" SNNKERNELS_CUDA_ARCHS "\"";
#else
  info += "false, \"cuda_archs\": \"\"";
#endif
#ifdef _OPENMP
  info += ", \"openmp\": true";
#else
  info += ", \"openmp\": false";
#endif
  using namespace cpu;  // policy.h: reading every value here validates its environment variable
  info += ", \"event_max_density\": {\"float32\": " +
          std::to_string(event_max_density(at::kFloat)) +
          ", \"float64\": " + std::to_string(event_max_density(at::kDouble)) + "}";
  info += ", \"event_min_width\": " + std::to_string(event_min_width());
  info += ", \"narrow_max_width\": " + std::to_string(narrow_max_width());
  info += std::string(", \"avx512\": ") + (use_avx512() ? "true" : "false");
  info += ", \"cpu_policy\": {";
  const std::pair<const char*, int64_t> counts[] = {
      {"chunk_neurons", max_chunk()}, {"masked_chunk_neurons", max_masked_chunk()},
      {"constant_task_bytes", constant_task_bytes()},
      {"weight_grad_parts", weight_grad_parts()}, {"topk_block_ratio", topk_block_ratio()},
      {"cpu_cache_min_bytes", pool_min_bytes()}};
  const char* sep = "";
  for (const auto& [name, value] : counts) {
    info += std::string(sep) + "\"" + name + "\": " + std::to_string(value);
    sep = ", ";
  }
  info += "}}";
  return info;
}

TORCH_LIBRARY(snnkernels, m) {
  // x [T, M] contiguous (on the CPU also one contiguous row broadcast over T, stride 0 over T);
  // mem0 [M] or None; beta/threshold/graded: 1-D with P elements, P a
  // divisor of M, neuron n using element n % P (P = 1: scalar, P = N: per neuron of the last
  // dims, P = M: per element); in the accumulation dtype (float32 for float32/half/bfloat16 x,
  // float64 for float64 x). pre_reset is the membrane before the same-step reset: [T, M] when
  // reset_delay is false, empty otherwise (it then equals mem). The surrogate arguments are not
  // used by the forward; they are here so the autograd formula sees them.
  m.def(
      "lif_forward(Tensor x, Tensor? mem0, Tensor beta, Tensor threshold, Tensor graded, "
      "int surrogate, float p0, float p1, int reset, bool reset_delay) "
      "-> (Tensor spk, Tensor mem, Tensor pre_reset)");
  // grad_spk / grad_mem: [T, M], a 1-element tensor broadcast to [T, M], or None (zero).
  // Returns grad_x [T, M] and grad_mem0 [M]; with param_grads, the gradients of beta (clamp
  // mask applied), threshold and graded in their own shapes, summed in a fixed order (time, then
  // neurons ascending, in 8 interleaved lanes for a scalar, on the CPU; a fixed tree on CUDA) so
  // the bits never depend on the thread count or launch configuration; else three empty
  // tensors.
  m.def(
      "lif_backward(Tensor? grad_spk, Tensor? grad_mem, Tensor mem, Tensor pre_reset, "
      "Tensor? mem0, Tensor beta, Tensor threshold, Tensor graded, int surrogate, float p0, "
      "float p1, int reset, bool reset_delay, bool param_grads) -> (Tensor grad_x, "
      "Tensor grad_mem0, Tensor grad_beta, Tensor grad_threshold, Tensor grad_graded)");
  // The LIF driven by one current x [M] (contiguous) held constant over `steps` steps, CPU only:
  // computes lif_forward's spikes on x.expand(steps, M) without writing the membrane; the
  // backward recomputes it from x and returns grad_x [M], the gradient summed over the steps
  // (from t = steps-1 down to 0). Other arguments and returns as lif_forward / lif_backward's.
  m.def(
      "lif_constant_forward(Tensor x, int steps, Tensor? mem0, Tensor beta, Tensor threshold, "
      "Tensor graded, int surrogate, float p0, float p1, int reset, bool reset_delay) -> Tensor");
  m.def(
      "lif_constant_backward(Tensor? grad_spk, Tensor x, int steps, Tensor? mem0, Tensor beta, "
      "Tensor threshold, Tensor graded, int surrogate, float p0, float p1, int reset, "
      "bool reset_delay, bool param_grads) -> (Tensor grad_x, Tensor grad_mem0, "
      "Tensor grad_beta, Tensor grad_threshold, Tensor grad_graded)");
  // Sparse-gradient training (snnkernels.sparse, docs/semantics.md). mask: 1 = TopK (k of every
  // row of `row` consecutive neurons, ties to the lower index; `temporal`: the carry through time
  // sees the masked gradient too), 2 = ActiveWindow (sigma' and dL/dh only where
  // |h - threshold| < width, same-step reset detached: through time by the leak only).
  // lif_forward_masked computes exactly lif_forward; it exists so that its autograd formula
  // sees the mask arguments.
  m.def(
      "lif_forward_masked(Tensor x, Tensor? mem0, Tensor beta, Tensor threshold, Tensor graded, "
      "int surrogate, float p0, float p1, int reset, bool reset_delay, int mask, int row, int k, "
      "float width, bool temporal) -> (Tensor spk, Tensor mem, Tensor pre_reset)");
  // lif_backward with the mask applied inside. compact=False: grad_x is the masked gradient
  // [T, M] and values/indices/row_ptr are empty. compact=True: grad_x is empty and the surviving
  // dL/dx entries come as TopK: ELL, values [R, k], int32 indices [R, k] (neuron within the row,
  // ascending), row_ptr empty; ActiveWindow: CSR, values [nnz], int32 indices [nnz], int64
  // row_ptr [R + 1]; R = T * M / row rows.
  m.def(
      "lif_backward_masked(Tensor? grad_spk, Tensor? grad_mem, Tensor mem, Tensor pre_reset, "
      "Tensor? mem0, Tensor beta, Tensor threshold, Tensor graded, int surrogate, float p0, "
      "float p1, int reset, bool reset_delay, bool param_grads, int mask, int row, int k, "
      "float width, bool temporal, bool compact) -> (Tensor grad_x, Tensor grad_mem0, "
      "Tensor grad_beta, Tensor grad_threshold, Tensor grad_graded, Tensor values, "
      "Tensor indices, Tensor row_ptr)");
  // The fused synapse + neuron layer: x [T, B, F] contiguous, weight [N, F], bias [N] or None;
  // I = x W^T + b in one GEMM for all T, then lif_forward on I viewed as [T, B * N] (no mem0).
  // Parameters as lif_forward's, for M = B * N. Mask arguments as lif_forward_masked's (mask 0:
  // dense), row = N. event: [1] bool on the CPU, whether the synapse ran event-driven (for
  // linear_dense_backward); [0] on other devices.
  m.def(
      "linear_lif_forward(Tensor x, Tensor weight, Tensor? bias, Tensor beta, Tensor threshold, "
      "Tensor graded, int surrogate, float p0, float p1, int reset, bool reset_delay, int mask, "
      "int k, float width, bool temporal) -> (Tensor spk, Tensor mem, Tensor pre_reset, "
      "Tensor event)");
  // linear_lif's dense synaptic backward from the current's gradient grad [R, N]:
  // grad_x = grad W [R, F], grad_weight = grad^T x [N, F] (over x's nonzeros when `event`, the
  // forward's output, says so; without it, when the forward's event rule holds for x and N),
  // grad_bias = column sums of grad [N]; empty when not needed.
  m.def(
      "linear_dense_backward(Tensor grad, Tensor x, Tensor weight, bool need_x, "
      "bool need_weight, bool need_bias, Tensor? event=None) -> (Tensor grad_x, "
      "Tensor grad_weight, Tensor grad_bias)");
  // The synaptic backward from a compact gradient (lif_backward_masked's ELL or CSR): x [R, F],
  // weight [N, F]. grad_x = dI W [R, F], grad_weight = dI^T x [N, F], grad_bias = column sums of
  // dI [N], each touching only the stored entries; empty when not needed.
  m.def(
      "linear_sparse_backward(Tensor values, Tensor indices, Tensor row_ptr, Tensor x, "
      "Tensor weight, bool need_x, bool need_weight, bool need_bias) -> (Tensor grad_x, "
      "Tensor grad_weight, Tensor grad_bias)");
  // The event-driven synapse for mostly-zero x (spikes), CPU only: out = x W^T + bias computed
  // over the nonzeros of x [R, F] (weight [N, F], bias [N] or None); spike_weight_grad gives
  // grad^T x [N, F] for grad [R, N] over the same nonzeros, and with need_bias the column sums
  // of grad [N] (else empty), rows in order.
  m.def("spike_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def("spike_weight_grad(Tensor grad, Tensor x, bool need_bias=False) -> (Tensor grad_weight, "
        "Tensor grad_bias)");
  // The density half of the rule by which linear_lif takes that path (cpu/spike_linear.h): x
  // alone; linear_lif also needs a layer of at least build_info's event_min_width neurons.
  m.def("event_driven(Tensor x) -> bool");
  m.def("build_info() -> str", &build_info);
  // Tests turn this on: kernels then fill outputs with NaN before writing them, so an element a
  // kernel forgets to write shows up.
  m.def("set_debug_poison(bool enabled) -> ()", &set_debug_poison);
  // The cache of the CPU kernels' large outputs (cpu/output_pool.h); info is
  // [cached bytes, limit bytes, hits, misses].
  m.def("cpu_cache_info() -> int[]", &cpu_cache_info);
  m.def("cpu_cache_set_limit(int bytes) -> ()", &pool_set_limit);
  m.def("cpu_cache_release() -> ()", &pool_release);
}

}  // namespace snnkernels
