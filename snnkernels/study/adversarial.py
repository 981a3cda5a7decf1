"""PGD adversarial training (Madry et al. 2018), the study's reference effect size: what a
method made for robustness does, to weigh what sparse training does against.

Each training batch is replaced by its L-inf PGD adversarial examples (ART's
ProjectedGradientDescentPyTorch, one random start) at eps in the middle of the study's L-inf
attack grid. The adversary differentiates the model being trained with its own (training)
surrogate and no sparse mask, as the evaluation's attacker does; the weight update then runs as
the arm trains (TopK arms: the masked backward). Random starts are drawn from numpy seeded per
(seed, batch), with the caller's random state restored.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class AdversarialTraining:
    """PGD with `steps` steps of eps_step = 2.5 eps / steps (Madry et al.'s ratio)."""

    steps: int = 7

    def eps(self, eps_linf_grid) -> float:
        """The middle of the attack grid (its median; the lower one of an even grid)."""
        grid = sorted(eps_linf_grid)
        if not grid:
            raise ValueError("AdversarialTraining: the attack config has no L-inf eps grid")
        return float(grid[(len(grid) - 1) // 2])


class PGDAdversary:
    """adversary(x, y) -> PGD examples of the batch x [B, F] for `model` (trained in place)."""

    def __init__(self, model: nn.Module, eps: float, steps: int, num_classes: int, seed: int):
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        if not eps > 0:
            raise ValueError(f"PGDAdversary: eps must be > 0, got {eps!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"PGDAdversary: steps must be a positive int, got {steps!r}")
        self.model, self.seed, self.batches = model, seed, 0
        weight = next(model.parameters())
        classifier = PyTorchClassifier(
            model, nn.CrossEntropyLoss(), input_shape=(model.in_features,),
            nb_classes=num_classes, device_type="gpu" if weight.is_cuda else "cpu")
        self.attack = ProjectedGradientDescentPyTorch(
            classifier, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps,
            num_random_init=1, batch_size=4096, verbose=False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        with _unmasked(self.model), _seeded(self.seed, self.batches):
            x_adv = self.attack.generate(x.detach().cpu().numpy(), y=y.cpu().numpy())
        self.model.train()  # ART leaves its estimator's model in eval mode
        return torch.as_tensor(x_adv, dtype=x.dtype, device=x.device)


@contextlib.contextmanager
def _unmasked(model: nn.Module):
    """The model differentiates densely inside (its layers' sparse masks set aside)."""
    layers = [m for m in model.modules() if hasattr(m, "sparse")]
    masks = [m.sparse for m in layers]
    for m in layers:
        m.sparse = None
    try:
        yield
    finally:
        for m, mask in zip(layers, masks):
            m.sparse = mask


@contextlib.contextmanager
def _seeded(seed: int, batch: int):
    state = np.random.get_state()
    np.random.seed((int(seed) * 1_000_003 + batch) % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
