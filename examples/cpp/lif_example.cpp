// Calls snnkernels::lif_forward from C++ through torch's dispatcher and checks it against a
// direct loop of the LIF equations (subtract reset, reset_delay=true). Exits non-zero on a
// mismatch, so it doubles as the CMake build's test.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  const int64_t steps = 20, neurons = 300;
  const double beta = 0.9, threshold = 1.0;
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({steps, neurons}, torch::kFloat64) * 0.8 + 0.3;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);

  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("snnkernels::lif_forward", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                    const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                    const at::Tensor&, const at::Tensor&, int64_t, double, double, int64_t,
                    bool)>();
  auto [spk, mem, pre] = op.call(x, std::nullopt, torch::full({1}, beta, opts),
                                 torch::full({1}, threshold, opts), torch::ones({1}, opts),
                                 /*surrogate=*/0, 1.0, M_PI, /*reset=*/0, /*reset_delay=*/true);

  auto u = torch::zeros({neurons}, opts);
  for (int64_t t = 0; t < steps; ++t) {
    const auto reset = (u - threshold > 0).to(torch::kFloat64);
    u = beta * u + x[t] - reset * threshold;
    const auto expected = (u - threshold > 0).to(torch::kFloat64);
    if (!torch::equal(spk[t], expected) || !torch::equal(mem[t], u)) {
      std::cerr << "mismatch at step " << t << "\n";
      return 1;
    }
  }
  std::cout << "snnkernels::lif_forward from C++: " << spk.sum().item<double>() << " spikes over "
            << steps << " x " << neurons << ", matches the direct loop\n";
  return 0;
}
