"""Adversarial robustness of one trained model on the test split (../shared/SPEC.md section 4).

evaluate_robustness(model, X, y, config) runs, with adversarial-robustness-toolbox (ART), at
every eps of an L-inf and an L2 grid (standardized feature units): FGSM, PGD, APGD-CE (one row
per attacker surrogate) and the gradient-free Square attack, plus PGD transfer attacks crafted
on other models, and returns every attack's accuracy and the per-example worst case over all.

- The attacker differentiates the trained model densely, never through the training-time
  sparse mask: gradients of a TabularSNN come from model.dense_copy(s), s in [its own surrogate
  ("own"), *config.surrogates]; the prediction scored is always the trained model's (the
  copies' forward is the same). See attack_models.py.
- Only the examples classified correctly when clean are attacked; the others count as broken
  at every eps, in every row (so no attack can "repair" one). Every adversarial example is
  checked to lie in its eps ball and scored on the trained model (attack_models.predict), not
  taken from ART's own verdict.
- One ART call per (norm, attack, surrogate) covers the whole eps grid: every row is attacked
  in units of its own eps (attack_models.PerturbationFrame), so ART's eps is always 1.
- No box: standardized features are unbounded, so the gradient attacks get clip_values=None;
  Square indexes clip_values unconditionally, so it gets a box no perturbation can reach.
- Deterministic given `seed`: each ART call runs after numpy / random / torch are seeded from
  (seed, what it attacks); the caller's global random states are restored afterwards.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import surrogate as sg
from ..models import TabularSNN
from .attack_models import FeatureImage, PerturbationFrame, attack_view, predict

NORMS = {"linf": np.inf, "l2": 2}
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd_ce")
ATTACKS = GRADIENT_ATTACKS + ("square",)


@dataclass(frozen=True)
class AttackConfig:
    """What evaluate_robustness runs. The defaults are sized for the default study's budget
    (81 cells in 15 minutes on 2 CPU cores, training included): PGD keeps 20 steps, APGD-CE 10
    (it adapts its step, Croce & Hein 2020 use 100 at far larger cost), Square 50 queries
    (a gradient-free check for masked gradients, not the strongest attack), one extra
    surrogate, at most 200 examples per cell. Measured on breast_cancer (114 test examples),
    TabularSNN(30, (128, 128), T=10), one thread: about 5 s a cell with two transfer sources.

    max_examples: attack at most this many test examples, chosen by select_examples
    (deterministic, stratified); the binomial standard error at 200 is <= 3.5 points.
    batch_size: rows per ART forward / backward; every eps grid of up to 2048 rows (examples x
    eps) is one batch.
    """

    eps_linf: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)
    # The L-inf grid x 5: an L-inf step of eps has L2 length up to eps * sqrt(F), and sqrt(F) ~ 5
    # in the middle (geometrically) of the study's 4..100 features, so both grids probe similar
    # strengths. At 5.0 (as at L-inf 1.0) the models measured on breast_cancer and digits
    # (TabularSNN dense / TopK, MLP) keep <= 5% accuracy: the grid's top breaks every model.
    eps_l2: tuple[float, ...] = (0.25, 0.5, 1.0, 2.5, 5.0)
    attacks: tuple[str, ...] = ATTACKS
    pgd_steps: int = 20
    apgd_steps: int = 10
    square_queries: int = 50
    # Besides each model's own surrogate: the straight-through estimator (sigma' = 1), i.e.
    # BPDA with the identity (Athalye et al. 2018), the standard probe for masked gradients:
    # flat, so another shape and sharpness than every dense arm's (fast_sigmoid(25), atan(2),
    # spike_rate_escape(1, 25)), and it reaches neurons however far from threshold. As cheap as
    # atan (sigmoid(1), tried too, attacks no better at twice the backward time). Each more
    # surrogate costs a full set of gradient attacks; atan(alpha=10), a sharp one, is a good
    # second for a larger budget.
    surrogates: tuple = (sg.straight_through_estimator(),)
    eot_samples: int = 8
    max_examples: int | None = 200
    batch_size: int = 2048

    def __post_init__(self):
        unknown = set(self.attacks) - set(ATTACKS)
        if unknown:
            raise ValueError(f"AttackConfig: unknown attacks {sorted(unknown)}; known: {ATTACKS}")
        for name in ("eps_linf", "eps_l2"):
            if any(not e > 0 for e in getattr(self, name)):
                raise ValueError(f"AttackConfig: {name} must be positive, "
                                 f"got {getattr(self, name)}")
        for name in ("pgd_steps", "apgd_steps", "square_queries", "eot_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AttackConfig: {name} must be >= 1")


def surrogate_label(s) -> str:
    """'fast_sigmoid(slope=2.0)' for snnkernels.surrogate.fast_sigmoid(slope=2)."""
    return f"{s.name}({', '.join(f'{k}={v}' for k, v in s.params)})"


def select_examples(y: np.ndarray, max_examples: int | None, balanced: bool = False) -> np.ndarray:
    """Indices of at most max_examples rows, deterministic: each class keeps its first rows, in
    proportion to its share (largest remainders get the leftover places), or with balanced=True
    (for balanced_accuracy, whose rare classes weigh as much as common ones) as evenly as the
    classes' sizes allow: places go one at a time to the class with the fewest so far that has
    rows left (ties: lower label)."""
    n = len(y)
    if max_examples is None or max_examples >= n:
        return np.arange(n)
    classes, counts = np.unique(y, return_counts=True)
    if balanced:
        take = np.zeros(len(classes), dtype=int)
        for _ in range(max_examples):
            open_ = np.flatnonzero(take < counts)
            take[open_[np.argmin(take[open_])]] += 1
    else:
        quota = counts * max_examples / n
        take = np.floor(quota).astype(int)
        for i in np.argsort(-(quota - take), kind="stable")[: max_examples - take.sum()]:
            take[i] += 1
    return np.sort(np.concatenate([np.flatnonzero(y == c)[:k] for c, k in zip(classes, take)]))


def evaluate_robustness(model: nn.Module, X, y, config: AttackConfig = AttackConfig(), *,
                        transfer_sources: dict[str, nn.Module] | None = None, seed: int = 0,
                        progress=None, metric: str = "accuracy"
                        ) -> tuple[list[dict], list[dict], float]:
    """Attacks `model` (a TabularSNN, sparse or not, or any module returning logits) on X [n, F]
    (standardized), y [n]. Returns (attack_rows, robust_rows, clean_accuracy):
    attack_rows: {"norm", "eps", "attack", "surrogate", "accuracy"}, one per norm, eps, attack
      ("fgsm", "pgd", "apgd_ce", "square" or a transfer_sources key) and attacker surrogate
      ("own" or surrogate_label(s) for gradient attacks on a TabularSNN, else None);
    robust_rows: {"norm", "eps", "accuracy"}: examples that survive every attack at that eps
      and at every smaller eps of the grid (its ball holds theirs);
    clean_accuracy: on the examples attacked (the first config.max_examples, stratified).
    metric: "accuracy", or "balanced_accuracy" (the table's, see data.Table): then every
      "accuracy" above is the mean over classes of the share of that class's attacked examples
      still correct, and the examples attacked are chosen class-balanced (select_examples), so a
      robust number is on the same scale as the clean metric of an imbalanced table.
    transfer_sources: name -> model; PGD crafted densely on it (its own surrogate), scored on
    `model`. Rate-encoded models are attacked and scored through the mean logits of
    config.eot_samples encoder draws (attack_models.predict). progress: optional callable(str).
    """
    if metric not in ("accuracy", "balanced_accuracy"):
        raise ValueError(f"evaluate_robustness: metric must be 'accuracy' or 'balanced_accuracy', "
                         f"got {metric!r}")
    X = np.ascontiguousarray(torch.as_tensor(X).detach().cpu().numpy(), dtype=np.float32)
    y = np.asarray(torch.as_tensor(y).cpu().numpy(), dtype=np.int64)
    keep = select_examples(y, config.max_examples, balanced=metric == "balanced_accuracy")
    X, y = X[keep], y[keep]
    n = len(y)
    eot = config.eot_samples
    score_seed = _derive(seed, "score")


    correct = predict(model, X, eot_samples=eot, seed=score_seed) == y
    X_ok, y_ok = X[correct], y[correct]
    classes, class_sizes = np.unique(y, return_counts=True)

    def score(ok: np.ndarray) -> float:
        """The metric over all n examples attacked, from `ok` over the clean-correct ones (the
        others count as wrong)."""
        if not n:
            return 0.0
        if metric == "accuracy":
            return float(ok.sum() / n)
        return float(np.mean([ok[y_ok == c].sum() / size for c, size in zip(classes, class_sizes)]))

    clean_accuracy = score(np.ones(len(y_ok), bool))
    grids = {"linf": config.eps_linf, "l2": config.eps_l2}
    alive = {(norm, e): np.ones(len(y_ok), bool) for norm, grid in grids.items() for e in grid}
    attack_rows = []

    def record(norm, frame, u_adv, attack, surrogate):
        """Scores one ART call's adversarial stack (all eps at once) on the trained model."""
        adversarial = frame.split(u_adv)
        for eps, x_adv in adversarial:
            _check_budget(x_adv, X_ok, norm, eps, attack)
        x_all = np.concatenate([x_adv for _, x_adv in adversarial])
        ok_all = (predict(model, x_all, eot_samples=eot, seed=score_seed)
                  == np.tile(y_ok, len(adversarial)))
        for i, (eps, _) in enumerate(adversarial):
            ok = ok_all[i * len(y_ok):(i + 1) * len(y_ok)]
            alive[(norm, eps)] &= ok
            attack_rows.append({"norm": norm, "eps": float(eps), "attack": attack, "surrogate":
                                surrogate, "accuracy": score(ok)})

    if isinstance(model, TabularSNN):
        attackers = [("own", None)] + [(surrogate_label(s), s) for s in config.surrogates]
    else:
        attackers = [(None, None)]
    say = progress or (lambda message: None)
    jobs = [(attack, model, s, label) for attack in config.attacks
            for label, s in (attackers if attack in GRADIENT_ATTACKS else [(None, None)])]
    jobs += [("pgd", source, None, name) for name, source in (transfer_sources or {}).items()]
    with _restored_random_state():
        for norm, grid in grids.items():
            frame = PerturbationFrame(X_ok, grid)
            for attack, target, s, label in jobs:
                name = attack if target is model else label  # transfer rows: the source's name
                say(f"{norm} {name}" + (f" surrogate={label}" if target is model and label else ""))
                u_adv = _run_art(target, s, attack, frame, np.tile(y_ok, len(grid)), norm, config,
                                 _derive(seed, norm, name, label))
                record(norm, frame, u_adv, name, label if target is model else None)
    for norm, grid in grids.items():
        # an adversarial example found at eps is one at every larger eps too (nested balls)
        broken = np.zeros(len(y_ok), bool)
        for e in sorted(grid):
            broken |= ~alive[(norm, e)]
            alive[(norm, e)] = ~broken
    robust_rows = [{"norm": norm, "eps": float(e), "accuracy": score(alive[(norm, e)])}
                   for norm, grid in grids.items() for e in grid]
    return attack_rows, robust_rows, clean_accuracy


def _derive(seed: int, *what) -> int:
    """A 31-bit seed for one ART call, from the run's seed and what is attacked."""
    return zlib.crc32(repr((int(seed),) + what).encode())


def _seed_all(seed: int) -> None:
    # ART draws its random starts / squares from numpy's (and Square L2 from random's) globals
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _restored_random_state():
    states = np.random.get_state(), random.getstate(), torch.get_rng_state()
    try:
        yield
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
        torch.set_rng_state(states[2])


def _check_budget(x_adv, x, norm, eps, attack) -> None:
    """A perturbation outside the eps ball would be a bug in the attack plumbing, not a result."""
    if not len(x):
        return
    delta = (x_adv - x).reshape(len(x), -1).astype(np.float64)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    if not np.isfinite(size).all() or (size.size and size.max() > eps * (1 + 1e-4) + 1e-6):
        raise RuntimeError(f"{attack} ({norm}, eps={eps}) moved an example by {size.max():.6g}")


def _classifier(view: nn.Module, input_shape, n_classes: int, clip_values=None):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=view, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                             nb_classes=n_classes, clip_values=clip_values,
                             device_type="gpu" if _device(view).type == "cuda" else "cpu")


def _run_art(target, surrogate, attack, frame, y, norm, config, seed) -> np.ndarray:
    """One ART call: `attack` on the attack view of `target` over the whole eps grid of `frame`
    (ART eps = 1 in its units); returns the adversarial stack in the frame."""
    from art.attacks.evasion import (AutoProjectedGradientDescent, FastGradientMethod,
                                     ProjectedGradientDescent, SquareAttack)

    u = frame.encode()
    if not len(u):
        return u
    image = FeatureImage(u.shape[1], norm) if attack == "square" else None
    view = attack_view(target, surrogate, eot_samples=config.eot_samples, frame=frame, image=image,
                       memo=image is not None)
    art_input = image.to_image(u) if image is not None else u
    with torch.no_grad():
        n_classes = view(torch.as_tensor(art_input[:1], device=_device(view))).shape[1]
    # Square indexes clip_values unconditionally: a box no perturbation of size <= 1 reaches
    box = (-2.0, float(u.max()) + 2.0) if attack == "square" else None
    classifier = _classifier(view, art_input.shape[1:], n_classes, box)
    common = dict(norm=NORMS[norm], batch_size=config.batch_size)
    if attack == "fgsm":
        art = FastGradientMethod(classifier, eps=1.0, eps_step=1.0, **common)
    elif attack == "pgd":  # step 2.5 eps / steps (Madry et al. 2018): can cross the ball and back
        art = ProjectedGradientDescent(classifier, eps=1.0, eps_step=2.5 / config.pgd_steps,
                                       max_iter=config.pgd_steps, num_random_init=0,
                                       verbose=False, **common)
    elif attack == "apgd_ce":  # one random start (ART's default is 5), first step 2 eps as in
        # Croce & Hein 2020
        art = AutoProjectedGradientDescent(classifier, eps=1.0, eps_step=2.0,
                                           max_iter=config.apgd_steps, nb_random_init=1,
                                           loss_type="cross_entropy", verbose=False, **common)
    else:  # p_init 0.3, not ART's 0.8: ART fails when the first square is as high as the small
        # image (randint(0, 0)), which 0.8 gives for up to 8 features
        art = SquareAttack(classifier, eps=1.0, max_iter=config.square_queries, p_init=0.3,
                           nb_restarts=1, verbose=False, **common)
    _seed_all(seed)
    view.reseed(seed)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # ART's L2 Square divides 0 / 0 when a proposal has no budget left; those NaN proposals
        # score NaN and are never accepted
        adv = art.generate(art_input, y=y)
    return image.features(adv) if image is not None else adv


def _device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return torch.device("cpu") if param is None else param.device
