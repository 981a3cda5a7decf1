"""The mechanism metrics of one trained cell, counted inside the ops
(snnkernels.mechanism), so every path the model takes (lif_constant, linear_lif, the masked LIF;
CPU and CUDA) is measured:

- per spiking layer, in the model's order (hidden layers, then the output layer):
  spike_rate and active_window_fraction on the test set (a forward without gradient);
  grad_current_density, the nonzero fraction of δI = dL/dI in the backward of a few training
  batches at the trained weights, the mask as trained (the weights are not changed);
- per model, input_grad: the mean over test rows of the L1 and L2 norms of d loss / d x and the
  nonzero fraction of its entries, differentiated with the model's own surrogate and no mask
  (what a gradient attacker sees, snnkernels.models.TabularSNN.dense_copy).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import mechanism as _mechanism
from ..models import TabularSNN

TRAIN_BATCHES = 4


def collect(model: nn.Module, X_train, y_train, X_test, y_test, *, batch_size: int, seed: int,
            train_batches: int = TRAIN_BATCHES) -> dict:
    """{"layers": [{"name", "spike_rate", "grad_current_density", "active_window_fraction"}...],
    "input_grad": {"l1", "l2", "density"}} for a trained model (layers [] for a non-spiking
    one). Gradient densities from `train_batches` batches of `batch_size` training rows drawn
    with `seed`. The model is left in eval mode with no .grad set."""
    _check_count("collect", "batch_size", batch_size)
    _check_count("collect", "train_batches", train_batches)
    layers = []
    if isinstance(model, TabularSNN):
        gradients = _training_gradients(model, X_train, y_train, batch_size, seed, train_batches)
        activity = _test_activity(model, X_test, batch_size)
        layers = [{"name": name, "spike_rate": metrics.spike_rate,
                   "grad_current_density": gradients[name].grad_current_density,
                   "active_window_fraction": metrics.active_window_fraction}
                  for name, metrics in activity.items()]
    model.eval()
    return {"layers": layers, "input_grad": input_gradient(model, X_test, y_test, batch_size)}


def spike_rates(mechanism: dict) -> list:
    """The per-layer spike rates of collect()'s result, in layer order."""
    return [layer["spike_rate"] for layer in mechanism["layers"]]


def hidden_gradient_density(mechanism: dict):
    """The mean grad_current_density of the hidden layers (those a sparse mask acts on; the
    output layer is always dense), or None for a model without spiking layers."""
    hidden = [layer["grad_current_density"] for layer in mechanism["layers"]
              if layer["name"] != "output"]
    return sum(hidden) / len(hidden) if hidden else None


def _check_count(fn: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")


def _training_gradients(model, X, y, batch_size, seed, batches) -> dict:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(X), generator=generator)[:batch_size * batches].to(X.device)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    with _mechanism.record() as recording:
        for idx in order.split(batch_size):
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            torch.autograd.grad(loss, params)  # the training step's backward; .grad untouched
    model.eval()
    return recording.layers()


@torch.no_grad()
def _test_activity(model, X, batch_size) -> dict:
    model.eval()
    with _mechanism.record() as recording:
        for start in range(0, len(X), batch_size):
            model(X[start:start + batch_size])
    return recording.layers()


def input_gradient(model: nn.Module, X, y, batch_size: int) -> dict:
    """{"l1", "l2", "density"} of d loss_i / d x_i over the rows of X (see the module
    docstring); each row's gradient is of its own cross-entropy loss."""
    _check_count("input_gradient", "batch_size", batch_size)
    view = model.dense_copy() if isinstance(model, TabularSNN) else model
    view.eval()
    l1 = l2 = nonzero = 0.0
    for start in range(0, len(X), batch_size):
        x = X[start:start + batch_size].detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(view(x), y[start:start + batch_size],
                                           reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        grad = grad.double()
        l1 += float(grad.abs().sum())
        l2 += float(grad.norm(dim=1).sum())
        nonzero += float(torch.count_nonzero(grad))
    rows = len(X)
    if rows == 0:
        return {"l1": math.nan, "l2": math.nan, "density": math.nan}
    return {"l1": l1 / rows, "l2": l2 / rows, "density": nonzero / X.numel()}
