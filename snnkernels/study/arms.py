"""The study's arms (docs/study.md): what is trained, and how.

Dense arms differ only in the surrogate used for training. Sparse arms train the same network
with a sparse-gradient mask (snnkernels.sparse) on the hidden layers and the fast_sigmoid
surrogate, so each is paired with the dense fast_sigmoid arm, its "dense twin". The MLP has the
same hidden widths with ReLU units (the non-spiking baseline and a transfer-attack source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from .. import sparse as S
from .. import surrogate as G
from ..models import TabularSNN
from .adversarial import AdversarialTraining

DENSE_TWIN = "dense_fast_sigmoid"


@dataclass(frozen=True)
class ModelConfig:
    """The network every arm shares (the MLP uses hidden only)."""

    hidden: tuple = (128, 128)
    T: int = 10
    beta: float = 0.9
    threshold: float = 1.0
    encoder: str = "direct"
    readout: str = "membrane"


@dataclass(frozen=True)
class Arm:
    name: str
    family: str                      # "dense", "topk", "active_window" or "mlp"
    surrogate: Optional[G.Surrogate] = None
    sparse: object = None            # snnkernels.sparse.TopK / ActiveWindow, or None
    density: Optional[float] = None  # nominal kept fraction (TopK); 1.0 dense; None otherwise
    twin: Optional[str] = field(default=None)
    adversarial: Optional[AdversarialTraining] = None  # PGD adversarial training (reference)

    def build(self, in_features: int, num_classes: int, config: ModelConfig) -> nn.Module:
        if self.family == "mlp":
            return mlp(in_features, config.hidden, num_classes)
        return TabularSNN(in_features, hidden=config.hidden, num_classes=num_classes,
                          T=config.T, encoder=config.encoder, readout=config.readout,
                          surrogate=self.surrogate, sparse=self.sparse, beta=config.beta,
                          threshold=config.threshold)


def mlp(in_features: int, hidden, num_classes: int) -> nn.Sequential:
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _arms():
    fs = G.fast_sigmoid()
    arms = [
        Arm(DENSE_TWIN, "dense", fs, density=1.0),
        Arm("dense_atan", "dense", G.atan(), density=1.0),
        Arm("dense_spike_rate_escape", "dense", G.spike_rate_escape(), density=1.0),
    ]
    for pct in (1, 5, 25):
        arms.append(Arm(f"topk_{pct}", "topk", fs, S.TopK(fraction=pct / 100), pct / 100,
                        DENSE_TWIN))
    for width in (0.05, 0.2):
        arms.append(Arm(f"aw_{width}", "active_window", fs, S.ActiveWindow(width), None,
                        DENSE_TWIN))
    arms.append(Arm("mlp", "mlp"))
    # the reference effect size: a method made for robustness, alone and with TopK 5%
    at = AdversarialTraining()
    arms.append(Arm("pgd_at", "adversarial", fs, None, 1.0, DENSE_TWIN, at))
    arms.append(Arm("pgd_at_topk_5", "adversarial", fs, S.TopK(fraction=0.05), 0.05, DENSE_TWIN,
                    at))
    return {arm.name: arm for arm in arms}


ARMS = _arms()
# the presets' arms: PGD adversarial training costs about steps + 1 times a plain arm's training,
# so it runs when asked for (--arms pgd_at,pgd_at_topk_5) or in the scale preset
STANDARD_ARMS = tuple(name for name, arm in ARMS.items() if arm.adversarial is None)
