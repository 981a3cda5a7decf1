"""What the attacker sees of a model, and how its predictions are scored (study attacks).

attack_view(model, surrogate)  the module ART differentiates: for a TabularSNN a dense copy
    (`dense_copy(surrogate)`: no training-time sparse mask, the given surrogate), else a deep copy
    of the module; wrapped in AttackView, which resets neuron state on every call, averages
    logits over encoder draws for rate-encoded models (expectation over transformation) and can
    read the features out of an image view (ART's Square attack only takes images) and out of a
    PerturbationFrame (one ART call covers a whole eps grid).
predict(model, X, eot_samples, seed)  the class the *trained* model gives each row: one forward
    of a copy of it (the same forward as the real model), for rate-encoded models the argmax of
    the mean logits over eot_samples draws from a fixed seed.

All copies leave the caller's modules untouched (ART sets .train(False) on what it is given,
and EOT reseeds the encoder).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from ..models import TabularSNN
from ..utils import reset
from .threat_model import ThreatModel


def is_rate_encoded(model: nn.Module) -> bool:
    return getattr(model, "encoder", None) == "rate"


def _has_state(model: nn.Module) -> bool:
    # TabularSNN keeps no state between calls (every forward starts from zero membranes), so it
    # has nothing to reset; other modules may hold snnkernels.nn.Leaky / snnTorch neurons.
    return any(callable(getattr(m, "reset_mem", None)) for m in model.modules())


class FeatureImage:
    """The image layout for ART's Square attack, which refuses inputs that are not [n, C, H, W].

    The d attacked values go row by row into the top-left s x s block (s = ceil(sqrt(d))) of
    one channel of an (s + 1) x (s + 1) image: ART picks a window's start with
    randint(0, H - tile), never the last row / column, and fails when the window is as high as
    the image. The other pixels are ignored by the model. Used for L-inf only, where each pixel
    has its own bound, so ignored pixels take no budget (they only waste the queries whose
    window falls on them).
    """

    def __init__(self, n_features: int):
        self.n_features = n_features
        self.side = math.ceil(math.sqrt(n_features))
        self.height = self.side + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.height, self.height)

    def to_image(self, x: np.ndarray) -> np.ndarray:
        n, s = x.shape[0], self.side
        block = np.zeros((n, s * s), dtype=x.dtype)
        block[:, : self.n_features] = x
        image = np.zeros((n, 1, self.height, self.height), dtype=x.dtype)
        image[:, 0, :s, :s] = block.reshape(n, s, s)
        return image

    def features(self, image):
        """image [n, 1, H, W] (numpy or torch) -> features [n, F]."""
        s = self.side
        return image[:, 0, :s, :s].reshape(image.shape[0], s * s)[:, : self.n_features]


class PerturbationFrame:
    """Chosen (grid point, example) pairs of clean rows x [n, F], in the frame ART attacks.

    Row r of the stack is the pair (point[r], example[r]), attacked with radius eps_r =
    radii[point[r]]: ART sees u_r, the perturbation of the threat model's mutable features in
    units of eps_r (zero when clean), plus a tag column (r + 1) * TAG. ART attacks u with
    eps = 1; the model view decodes each row back to x0_r + eps_r * u_r on the mutable
    features (L-inf: each coordinate of u stretched onto the room the box leaves it, so the
    unit cube is box and ball together) and projects it into the threat model (box, one-hot
    groups), reading r from the tag by rounding (ART moves the tag by at most 1, its whole
    budget; the model never sees it and its gradient is zero). Immutable features are not in u,
    so no budget goes to them.

    Why: ART's APGD and Square take one scalar eps, and on the study's small test sets a call's
    time is mostly fixed per-batch overhead, so one call on the stacked grid is several times
    faster than one call per eps. L-inf and L2 attacks are equivariant under this per-row
    scaling (sign / normalised steps, projections and random starts all scale with eps), so
    this is the same attack as one with eps_r in x-space. `rows` lets later attacks run only on
    the pairs no earlier attack broke.
    """

    TAG = 1000.0

    def __init__(self, x: np.ndarray, radii, threat: ThreatModel | None = None, rows=None,
                 norm: str = "linf"):
        self.radii = np.asarray(radii, np.float32)
        self.n = len(x)
        self.threat = threat if threat is not None else ThreatModel.unbounded(x.shape[1])
        if rows is None:
            rows = np.ones((len(self.radii), self.n), bool)
        self.point, self.example = np.nonzero(rows)  # grid-point-major
        self.x0 = np.asarray(x, np.float32)[self.example]
        self.eps = self.radii[self.point]
        self.mutable = np.flatnonzero(self.threat.mutable)
        # L-inf: per row and mutable feature, the share of eps the box leaves up / down
        # (0..1); u in [-1, 1] is stretched onto it, so the unit cube maps exactly onto box and
        # ball together and every coordinate keeps a gradient (clamping to the box after the
        # step leaves a zero gradient outside it, which made APGD-CE weaker than PGD). Not for
        # L2: the box and the ball do not factor per coordinate, and stretching would spend a
        # whole unit of budget on a feature that can move only part of eps; there the box
        # clamps (ThreatModel.project).
        self.up = self.down = None
        if norm == "linf":
            lower, upper = self.threat.box(self.x0)
            with np.errstate(divide="ignore", invalid="ignore"):
                self.up, self.down = (
                    np.clip(np.nan_to_num(d[:, self.mutable] / self.eps[:, None], nan=1.0,
                                          posinf=1.0), 0.0, 1.0).astype(np.float32)
                    for d in (upper - self.x0, self.x0 - lower))
        self._on: dict = {}

    def __len__(self) -> int:
        return len(self.point)

    def encode(self) -> np.ndarray:
        """The clean stack in the attack frame: [rows, mutable features + 1]."""
        u = np.zeros((len(self.x0), len(self.mutable) + 1), np.float32)
        u[:, -1] = (np.arange(len(u)) + 1) * self.TAG
        return u

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        key = str(u.device)
        if key not in self._on:
            self._on[key] = tuple(None if a is None else torch.as_tensor(a, device=u.device)
                                  for a in (self.x0, self.eps, self.mutable, self.up, self.down))
        x0, eps, mutable, up, down = self._on[key]
        rows = (torch.round(u[:, -1].detach() / self.TAG).long() - 1).clamp(0, len(x0) - 1)
        step = u[:, :-1]
        if up is not None:
            up, down = up[rows], down[rows]
            slope = torch.where(step >= 0, up, down)
            # A side with no room (the clean value on the box's edge) moves nothing; its
            # gradient takes the other side's slope, so an attack that stepped there can come
            # back.
            pull = torch.where(slope > 0, slope, torch.maximum(up, down))
            step = slope.detach() * step.detach() + pull * (step - step.detach())
        x = x0[rows].index_add(1, mutable, eps[rows, None] * step)
        return self.threat.project(x, x0[rows])

    @torch.no_grad()
    def adversarial(self, u_adv: np.ndarray) -> np.ndarray:
        """The adversarial rows x_adv [rows, F] (projected) from ART's output u_adv."""
        u = torch.as_tensor(np.ascontiguousarray(u_adv), dtype=torch.float32)
        u[:, -1] = (torch.arange(len(u)) + 1) * self.TAG  # the tag, exactly
        return self.decode(u).numpy()


class AttackView(nn.Module):
    """features [n, F] (or a PerturbationFrame's rows, or an image of either, see FeatureImage)
    -> logits [n, C], centred per row.

    Centring (subtracting each row's mean) changes neither the argmax, nor the cross-entropy,
    nor its gradient, but keeps ART's "this model outputs probabilities" check (APGD-CE) from
    firing on spike counts such as [1, 0]. With capped_range, a row whose logits span more than
    LOGIT_RANGE is scaled down to that span by a detached factor (argmax unchanged): once the
    true class leads by more than ~17, float32 rounds its softmax to 1 and cross-entropy's
    gradient loses the true-class term (and soon every term), which stalled APGD-CE far from
    the clean point (on bio, L2 eps 1, an MLP kept 16 of 34 examples against PGD's 1). For
    gradient attacks only: a gradient-free search compares margins across proposals, which a
    per-row scale would distort. Rate-encoded models: the batch is repeated
    eot_samples times and the logits averaged, one encoder draw per copy; the encoder's stream
    advances from call to call (fresh draws per gradient step), from the seed given to reseed().
    """

    LOGIT_RANGE = 10.0

    def __init__(self, model: nn.Module, *, eot_samples: int = 1,
                 frame: PerturbationFrame | None = None, image: FeatureImage | None = None,
                 memo: bool = False, capped_range: bool = False):
        super().__init__()
        self.model = model
        self.capped_range = capped_range
        self.eot_samples = eot_samples if is_rate_encoded(model) else 1
        self.frame, self.image = frame, image
        self._stateful = _has_state(model)
        self._labels, self.witness = None, {}
        # memo: remember the logits of every row seen without grad. ART's Square evaluates
        # each point three times (the whole batch to find survivors, the current points' loss
        # again, then the proposals): with the memo only the proposals cost a forward. Only for
        # deterministic models (not rate-encoded, no state), where a row's logits are fixed.
        self._memo = {} if memo and not self._stateful and not is_rate_encoded(model) else None

    def track(self, labels: np.ndarray, norm: str) -> None:
        """From now on remember, per frame row, the first input this view sees misclassified
        (label != labels[row]) inside the frame's ball: `witness` {row: u}. ART's APGD returns
        its last iterate, not its best one (Croce & Hein's reference returns any misclassified
        iterate), so an example broken on the way could be lost; the caller keeps the witness.
        Not for rate-encoded models: one draw's verdict is not the scored mean's."""
        self.witness = {}
        if is_rate_encoded(self.model):
            return
        self._labels = torch.as_tensor(labels)
        self._found = torch.zeros(len(self.frame), dtype=torch.bool)
        self._norm = norm

    def _remember(self, u, logits, finite) -> None:
        with torch.no_grad():
            u = u.detach().cpu()
            rows = (torch.round(u[:, -1] / self.frame.TAG).long() - 1).clamp(0, len(self.frame) - 1)
            step = u[:, :-1]
            size = step.abs().amax(1) if self._norm == "linf" else step.norm(dim=1)
            hit = ((logits.detach().cpu().argmax(1) != self._labels[rows]) & (size <= 1 + 1e-5)
                   & finite.cpu()[:, 0] & ~self._found[rows])
            for i in torch.nonzero(hit).flatten().tolist():
                if not self._found[rows[i]]:
                    self._found[rows[i]] = True
                    self.witness[int(rows[i])] = u[i].numpy().copy()

    def reseed(self, seed: int) -> None:
        if is_rate_encoded(self.model):
            self.model.reseed(seed)

    def forward(self, x):
        if self._memo is None or torch.is_grad_enabled():
            return self._logits(x)
        keys = [row.tobytes() for row in x.detach().cpu().numpy()]
        new = [i for i, key in enumerate(keys) if key not in self._memo]
        if new:
            for i, logits in zip(new, self._logits(x[new])):
                self._memo[keys[i]] = logits
        return torch.stack([self._memo[key] for key in keys])

    def _logits(self, x):
        if self.image is not None:
            x = self.image.features(x)
        # ART's L2 Square proposes NaN rows (0 / 0) at times; a spiking model reads NaN as "no
        # spike" and would score them as valid points, so they get NaN logits, never accepted
        finite = torch.isfinite(x).all(1, keepdim=True)
        u = x
        if self.frame is not None:
            x = self.frame.decode(torch.nan_to_num(x))
        if self._stateful:
            reset(self.model)  # every ART iteration / query starts from a fresh neuron state
        n = x.shape[0]
        logits = self.model(x.repeat(self.eot_samples, 1) if self.eot_samples > 1 else x)
        if self.eot_samples > 1:
            logits = logits.view(self.eot_samples, n, -1).mean(0)
        logits = logits - logits.mean(1, keepdim=True)
        if self.capped_range:
            span = (logits.amax(1, keepdim=True) - logits.amin(1, keepdim=True)).detach()
            logits = logits / torch.clamp(span / self.LOGIT_RANGE, min=1.0)
        if self._labels is not None and self.frame is not None:
            self._remember(u, logits, finite)
        return torch.where(finite, logits, torch.full_like(logits, float("nan")))


def attack_view(model: nn.Module, surrogate=None, *, eot_samples: int = 1,
                frame: PerturbationFrame | None = None, image: FeatureImage | None = None,
                memo: bool = False, capped_range: bool = False) -> AttackView:
    """A dense, gradient-ready copy of `model` for ART. TabularSNN: dense_copy(surrogate)
    (surrogate None: the trained one); other modules: a deep copy (surrogate must be None).
    capped_range: see AttackView (for gradient attacks)."""
    if isinstance(model, TabularSNN):
        twin = model.dense_copy(surrogate)
        # every TabularSNN forward starts from zero membranes: each ART query is a fresh start
        assert not _has_state(twin), "TabularSNN was assumed stateless"
    else:
        if surrogate is not None:
            raise ValueError(f"a surrogate applies to a TabularSNN, not {type(model).__name__}")
        twin = copy.deepcopy(model)
    return AttackView(twin.eval(), eot_samples=eot_samples, frame=frame, image=image, memo=memo,
                      capped_range=capped_range)


@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray, *, eot_samples: int = 1, seed: int = 0,
            batch_size: int = 4096) -> np.ndarray:
    """Predicted classes [n] of the trained model on X [n, F] (a copy: forward identical).
    Rate-encoded: argmax of the mean logits over eot_samples draws, the encoder reseeded with
    `seed` first (the same draws for every call with the same X and seed)."""
    view = AttackView(copy.deepcopy(model).eval(), eot_samples=eot_samples)
    view.reseed(seed)
    param = next(model.parameters(), None)
    x = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32,
                        device=None if param is None else param.device)
    return torch.cat([view(x[i:i + batch_size]).argmax(1)
                      for i in range(0, len(x), batch_size)] or [torch.zeros(0, dtype=torch.long)]
                     ).cpu().numpy()
