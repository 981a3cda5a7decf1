"""What an attacker may change in a table row (the study's tabular threat model, docs/study.md).

- Every feature stays inside its training range: adversarial rows are clipped to the train
  part's per-column min / max (standardized units, Split.lower / upper), widened per row to
  the clean value where a test row already lies outside (the attack never moves a feature
  further out; clipping the clean row itself would change it without an attack).
- One-hot groups and binary features are immutable by default: a category or a yes/no fact is
  not "a little" different. With perturb_categorical the one-hot groups move too, and after
  every step each group is projected to a valid category (its largest column set to 1, the
  others to 0). Binary features stay immutable.
- Columns named in `immutable` (a feature name, or the source column of a one-hot group) never
  move.
- Budgets count mutable features only: L-inf eps per feature, and L2 eps scaled by sqrt(F), F
  the number of mutable features, so an L2 eps is the root-mean-square change per feature and
  compares across tables of any width (an L-inf step of eps has L2 length eps * sqrt(F)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .data import BINARY, ONEHOT, Split


class ThreatModelError(ValueError):
    """A threat-model option that does not fit the table (one line, names the option)."""


@dataclass(frozen=True)
class ThreatModel:
    """lower / upper: float32 [F], the box (standardized units); mutable: bool [F]; groups: the
    column indices of each one-hot group that moves and is projected to a valid category; std:
    float32 [F] raw units per standardized unit (None: unknown, e.g. synthetic data)."""

    lower: np.ndarray
    upper: np.ndarray
    mutable: np.ndarray
    groups: tuple = ()
    std: np.ndarray | None = None

    def __post_init__(self):
        F = len(self.mutable)
        if self.lower.shape != (F,) or self.upper.shape != (F,) or (self.lower > self.upper).any():
            raise ThreatModelError("ThreatModel: lower / upper must be [F] with lower <= upper")
        if not self.mutable.any():
            raise ThreatModelError("ThreatModel: no feature is mutable, nothing to attack")

    @classmethod
    def unbounded(cls, n_features: int) -> "ThreatModel":
        """Every feature free and unbounded (a table without metadata)."""
        return cls(np.full(n_features, -np.inf, np.float32), np.full(n_features, np.inf, np.float32),
                   np.ones(n_features, bool))

    @classmethod
    def from_split(cls, split: Split, immutable=(), perturb_categorical: bool = False
                   ) -> "ThreatModel":
        """The study's threat model on one split (see the module docstring). Raises
        ThreatModelError naming an `immutable` column the table does not have."""
        kinds = list(split.feature_kinds or [])
        mutable = mutable_features(split.feature_names or [], kinds, immutable,
                                   perturb_categorical)
        lower, upper = np.asarray(split.lower, np.float32), np.asarray(split.upper, np.float32)
        # a level never seen in training has a one-point range: it stays as it is
        seen = upper > lower
        groups = tuple(cols[seen[cols]] for cols in _onehot_groups(kinds).values()
                       if perturb_categorical and mutable[cols].all() and seen[cols].sum() > 1)
        return cls(lower, upper, mutable, groups, np.asarray(split.std, np.float32))

    @property
    def n_mutable(self) -> int:
        return int(self.mutable.sum())

    def radius(self, norm: str, eps: float) -> float:
        """The ball's radius in standardized units for a grid eps (L2: eps * sqrt(F mutable))."""
        return float(eps) * (math.sqrt(self.n_mutable) if norm == "l2" else 1.0)

    def raw_eps(self, eps: float) -> float | None:
        """eps in raw feature units: the median over mutable continuous features of std * eps."""
        if self.std is None:
            return None
        continuous = self.mutable.copy()
        for cols in self.groups:
            continuous[cols] = False
        return float(np.median(self.std[continuous]) * eps) if continuous.any() else None

    def box(self, x0):
        """The per-row box (lower, upper) [n, F] around clean rows x0 (numpy or torch)."""
        if isinstance(x0, torch.Tensor):
            lower, upper = (torch.as_tensor(b, device=x0.device, dtype=x0.dtype)
                            for b in (self.lower, self.upper))
            return torch.minimum(lower, x0), torch.maximum(upper, x0)
        return np.minimum(self.lower, x0), np.maximum(self.upper, x0)

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Rows x [n, F] (perturbed from the clean x0) into the threat model's domain: clipped
        to the box, each moving one-hot group set to its largest column (straight-through: the
        gradient passes as if unprojected, so the attack can push a group to another category)."""
        lower, upper = self.box(x0)
        x = _InwardClamp.apply(x, lower, upper)
        if not self.groups:
            return x
        hard = x.clone()
        for cols in self.groups:
            cols = torch.as_tensor(cols, device=x.device)
            # rank a group's columns by how far each is along its own range
            part = (x[:, cols] - lower[:, cols]) / (upper[:, cols] - lower[:, cols])
            onehot = torch.nn.functional.one_hot(part.argmax(1), len(cols)).to(x.dtype)
            hard[:, cols] = lower[:, cols] + onehot * (upper[:, cols] - lower[:, cols])
        return x + (hard - x).detach()

    def check(self, x_adv: np.ndarray, x: np.ndarray, norm: str, radius: float, what: str) -> None:
        """Raises RuntimeError when an adversarial row leaves the threat model: outside the box
        or the ball (measured on the features that are not in a projected one-hot group), an
        immutable feature changed, or a projected group not a valid category. Any of these is a
        bug in the attack plumbing, not a result."""
        if not len(x):
            return
        delta = (x_adv - x).astype(np.float64)
        tol = 1e-4
        problems = []
        if not np.isfinite(x_adv).all():
            problems.append("non-finite values")
        lower, upper = self.box(x)
        if (x_adv < lower - tol).any() or (x_adv > upper + tol).any():
            problems.append("left the training range")
        if np.abs(delta[:, ~self.mutable]).max(initial=0) > 0:
            problems.append("changed an immutable feature")
        budgeted = self.mutable.copy()
        for cols in self.groups:
            budgeted[cols] = False
            part = x_adv[:, cols]
            at_top = np.isclose(part, upper[:, cols], atol=tol)
            if not ((at_top.sum(1) == 1) & (at_top | np.isclose(part, lower[:, cols], atol=tol)
                                             ).all(1)).all():
                problems.append("left a one-hot group in no valid category")
        d = delta[:, budgeted]
        size = np.abs(d).max(1, initial=0) if norm == "linf" else np.linalg.norm(d, axis=1)
        if size.size and size.max() > radius * (1 + tol) + 1e-6:
            problems.append(f"moved by {size.max():.6g} > {radius:.6g}")
        if problems:
            raise RuntimeError(f"{what} ({norm}, radius {radius:g}): " + "; ".join(problems))


class _InwardClamp(torch.autograd.Function):
    """Clamps x to [lower, upper]. Its gradient passes inside the box, and on or past an edge
    only when it points back in (the attacks ascend the loss: negative at the upper edge,
    positive at the lower one). So no L2 budget goes to pushing a feature that cannot move
    further, and an attack that stepped past the box is not stranded there by a zero gradient."""

    @staticmethod
    def forward(ctx, x, lower, upper):
        ctx.save_for_backward(x, lower, upper)
        return torch.clamp(x, lower, upper)

    @staticmethod
    def backward(ctx, grad):
        x, lower, upper = ctx.saved_tensors
        passes = ((x < upper) | (grad < 0)) & ((x > lower) | (grad > 0))
        return grad * passes, None, None


def _onehot_groups(kinds) -> dict:
    groups: dict = {}
    for j, kind in enumerate(kinds):
        if kind.startswith(ONEHOT):
            groups.setdefault(kind, []).append(j)
    return {k: np.array(v) for k, v in groups.items()}


def mutable_features(names, kinds, immutable=(), perturb_categorical: bool = False
                     ) -> np.ndarray:
    """bool [F]: which features the attacker may change (module docstring). Raises
    ThreatModelError naming an unknown `immutable` column, or when nothing is left to change."""
    mutable = np.array([k != BINARY and (perturb_categorical or not k.startswith(ONEHOT))
                        for k in kinds], dtype=bool)
    sources = column_indices(names, kinds, immutable)
    for c in immutable:
        mutable[sources[c]] = False
    if not mutable.any():
        raise ThreatModelError("no feature is left for the attacks to change (binary and one-hot "
                               "features are immutable unless --perturb-categorical; see also "
                               "--immutable)")
    return mutable


def column_indices(names, kinds, immutable) -> dict:
    """Raises ThreatModelError naming the `immutable` columns the table lacks; else returns
    column name -> its feature indices (a one-hot source column: its whole group)."""
    sources: dict = {}
    for j, (name, kind) in enumerate(zip(names, kinds)):
        sources.setdefault(name, []).append(j)
        if kind.startswith(ONEHOT):
            sources.setdefault(kind[len(ONEHOT):], []).append(j)
    unknown = [c for c in immutable if c not in sources]
    if unknown:
        shown = _source_names(names, kinds)
        more = f", ... ({len(shown)} in all)" if len(shown) > 12 else ""
        raise ThreatModelError(
            f"--immutable: unknown column(s) {', '.join(map(repr, unknown))}; the table's "
            f"feature columns are {', '.join(map(repr, shown[:12]))}{more}")
    return sources


def has_categorical(kinds) -> bool:
    return any(k.startswith(ONEHOT) for k in kinds)


def _source_names(names, kinds) -> list:
    out = []
    for name, kind in zip(names, kinds):
        shown = kind[len(ONEHOT):] if kind.startswith(ONEHOT) else name
        if shown not in out:
            out.append(shown)
    return out
