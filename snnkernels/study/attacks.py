"""Adversarial robustness of one trained model on the test split (docs/study.md).

evaluate_robustness(model, X, y, config, threat=...) attacks the model with
adversarial-robustness-toolbox (ART) at every eps of an L-inf and an L2 grid, inside a tabular
threat model (threat_model.py: training-range box, immutable columns, L2 scaled by sqrt(F)),
and returns each attack's accuracy, the per-example worst case, and which attack broke what.

Attacks, per norm, in this order:
1. on every (eps, example) pair ("scope": "all", each one's own accuracy): PGD with random
   restarts and APGD-CE (Croce & Hein 2020) with restarts, both through the model's own
   surrogate ("own");
2. only on the pairs no earlier attack broke ("scope": "survivors"; the accuracy row is then
   the worst case so far): APGD-DLR (3 or more classes), APGD-CE through each attacker surrogate
   of config.surrogates (other shapes and sharpness than the model's: a dead or flat surrogate
   cannot hide an adversarial example from all of them), the gradient-free attack (ART's Square
   for L-inf; for L2 a tabular random search, see random_search_l2) and PGD transfer attacks
   (one start, from the clean point) crafted on other models;
3. "linearized": PGD (one start, from the clean point) through the straight-through estimator (sigma' = 1, BPDA with the identity,
   Athalye et al. 2018) on every pair, reported in its own rows and NOT part of the worst case:
   its input gradient does not depend on the input, so it shows what a linear model of the
   network finds, a diagnostic rather than an attack on the spiking model.

- The attacker differentiates the trained model densely, never through the training-time
  sparse mask: gradients of a TabularSNN come from model.dense_copy(s); the prediction scored
  is always the trained model's (the copies' forward is the same). See attack_models.py.
- Only the examples classified correctly when clean are attacked; the others count as broken
  at every eps, in every row. Every adversarial example is checked against the threat model
  (ThreatModel.check) and scored on the trained model, not taken from ART's own verdict.
- One ART call per (norm, attack, surrogate) covers the whole eps grid
  (attack_models.PerturbationFrame), so ART's eps is always 1.
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
from .threat_model import ThreatModel

NORMS = {"linf": np.inf, "l2": 2}
ATTACKS = ("pgd", "apgd_ce", "apgd_dlr", "square")  # config.attacks; "square": gradient-free
GRADIENT_FREE = {"linf": "square", "l2": "random_search"}  # the row label per norm
LINEARIZED = "linearized"
LINEARIZING_SURROGATE = sg.straight_through_estimator()


@dataclass(frozen=True)
class AttackConfig:
    """What evaluate_robustness runs, and the threat model's options.

    The defaults are the default and full presets' attacks: APGD-CE 100 steps x 3 restarts as
    Croce & Hein 2020 recommend (the adaptive step needs the steps; restarts catch the examples
    one start misses), PGD 20 steps x 3 random restarts, 1,000 gradient-free queries (Square's
    own evaluation budget starts at 1,000), two attacker surrogates besides the model's own:
    fast_sigmoid(slope=3), far smoother than every arm's (fast_sigmoid(25), atan(2),
    spike_rate_escape(1, 25)), reaching neurons far from threshold; atan(alpha=10), far sharper.
    Their cost is held down by attacking, after the first two, only the (eps, example) pairs
    still unbroken, and by a 4-point grid: on these small models an attack's time is mostly
    per-iteration overhead, nearly the same for 30 or 100 rows, so it is the number of ART
    calls and iterations that sizes the presets (config.py). max_examples = 40: binomial
    standard error of one cell's robust accuracy <= 8 points; the seeds average it down. surrogate_restarts: APGD-CE starts per extra
    surrogate (one: each only mops up what the model's own surrogate missed).

    eps_linf: per-feature bound, standardized units. eps_l2: the L2 radius divided by sqrt(F),
    F the number of mutable features (threat_model.py), i.e. the root-mean-square change per
    feature, on the same scale as eps_linf (an L-inf step of eps has L2 length eps * sqrt(F));
    at 1.0 (as at L-inf 1.0) every model measured keeps <= 5% accuracy.
    immutable: feature columns (or one-hot source columns) that never move; perturb_categorical:
    one-hot groups move too, projected to a valid category after every step.
    batch_size: rows per ART forward / backward; every eps grid of up to 2048 rows is one batch.
    """

    eps_linf: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0)
    eps_l2: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0)
    attacks: tuple[str, ...] = ATTACKS
    pgd_steps: int = 20
    pgd_restarts: int = 3
    apgd_steps: int = 100
    apgd_restarts: int = 3
    surrogate_restarts: int = 1
    square_queries: int = 1000
    surrogates: tuple = (sg.fast_sigmoid(slope=3), sg.atan(alpha=10))
    linearized: bool = True
    eot_samples: int = 8
    max_examples: int | None = 40
    batch_size: int = 2048
    immutable: tuple[str, ...] = ()
    perturb_categorical: bool = False

    def __post_init__(self):
        unknown = set(self.attacks) - set(ATTACKS)
        if unknown:
            raise ValueError(f"AttackConfig: unknown attacks {sorted(unknown)}; known: {ATTACKS}")
        for name in ("eps_linf", "eps_l2"):
            grid = getattr(self, name)
            if not grid or any(not e > 0 for e in grid) or list(grid) != sorted(set(grid)):
                raise ValueError(f"AttackConfig: {name} must be positive and increasing, "
                                 f"got {grid}")
        for name in ("pgd_steps", "pgd_restarts", "apgd_steps", "apgd_restarts", "surrogate_restarts",
                     "square_queries", "eot_samples", "batch_size"):
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
                        threat: ThreatModel | None = None,
                        transfer_sources: dict[str, nn.Module] | None = None, seed: int = 0,
                        progress=None, metric: str = "accuracy") -> dict:
    """Attacks `model` (a TabularSNN, sparse or not, or any module returning logits) on X [n, F]
    (standardized), y [n], inside `threat` (None: every feature free and unbounded). Returns a
    dict:
    "attacks": rows {"norm", "eps", "radius", "attack", "surrogate", "scope", "accuracy"}, one
      per norm, eps, attack ("pgd", "apgd_ce", "apgd_dlr", "square" / "random_search",
      LINEARIZED, or a transfer_sources key) and attacker surrogate ("own" or
      surrogate_label(s) for gradient attacks on a TabularSNN, else None). eps: the grid value
      (L2: per sqrt(mutable feature)); radius: the ball's radius in standardized units. scope
      "all": accuracy under this attack alone; "survivors": it ran only on pairs no earlier
      attack broke, so its accuracy is the worst case up to it; "linearized": its own, not in
      the worst case.
    "robust": rows {"norm", "eps", "radius", "eps_raw", "accuracy"}: examples that survive every
      attack but the linearized one at that eps and at every smaller eps of the grid (its ball
      holds theirs); eps_raw: eps in raw feature units (ThreatModel.raw_eps; None unknown).
    "broken_by": rows {"norm", "eps", "attack", "surrogate", "broke", "first"}: per attack of
      the worst case, the number of examples it broke at that eps ("broke", of those it
      attacked) and of those the number no earlier attack (in the order of the module
      docstring) had broken at that or a smaller eps ("first").
    "examples": {"rows": indices into X of the examples attacked, "first_broken_by": rows
      {"norm", "eps", "attack"}, "attack" a list over those examples of what broke each one first
      at that eps ("attack" or "attack[surrogate]" as in broken_by; "clean" when misclassified
      unattacked; None when it survived)}.
    "clean": the metric on the examples attacked (the first config.max_examples, stratified).
    metric: "accuracy", or "balanced_accuracy" (the table's, see data.Table): then every
      "accuracy" above is the mean over classes of the share of that class's attacked examples
      still correct, and the examples attacked are chosen class-balanced (select_examples).
    transfer_sources: name -> model; PGD crafted densely on it (its own surrogate), scored on
    `model`. Rate-encoded models are attacked and scored through the mean logits of
    config.eot_samples encoder draws (attack_models.predict). progress: optional callable(str).
    """
    if metric not in ("accuracy", "balanced_accuracy"):
        raise ValueError(f"evaluate_robustness: metric must be 'accuracy' or 'balanced_accuracy', "
                         f"got {metric!r}")
    X = np.ascontiguousarray(torch.as_tensor(X).detach().cpu().numpy(), dtype=np.float32)
    y = np.asarray(torch.as_tensor(y).cpu().numpy(), dtype=np.int64)
    threat = threat if threat is not None else ThreatModel.unbounded(X.shape[1])
    if len(threat.mutable) != X.shape[1]:
        raise ValueError(f"evaluate_robustness: threat is for {len(threat.mutable)} features, "
                         f"X has {X.shape[1]}")
    keep = select_examples(y, config.max_examples, balanced=metric == "balanced_accuracy")
    X, y = X[keep], y[keep]
    n = len(y)
    eot = config.eot_samples
    score_seed = _derive(seed, "score")

    correct = predict(model, X, eot_samples=eot, seed=score_seed) == y
    X_ok, y_ok = X[correct], y[correct]
    classes, class_sizes = np.unique(y, return_counts=True)
    n_classes = _n_classes(model, X[:1])

    def score(ok: np.ndarray) -> float:
        """The metric over all n examples attacked, from `ok` over the clean-correct ones (the
        others count as wrong)."""
        if not n:
            return 0.0
        if metric == "accuracy":
            return float(ok.sum() / n)
        return float(np.mean([ok[y_ok == c].sum() / size for c, size in zip(classes, class_sizes)]))

    grids = {"linf": config.eps_linf, "l2": config.eps_l2}
    radii = {norm: [threat.radius(norm, e) for e in grid] for norm, grid in grids.items()}
    # alive[norm][k, i]: example i unbroken at grid point k and every smaller one
    alive = {norm: np.ones((len(grid), len(y_ok)), bool) for norm, grid in grids.items()}
    first = {norm: np.full((len(grid), n), None, object) for norm, grid in grids.items()}
    for table in first.values():
        table[:, ~correct] = "clean"
    ok_rows = np.flatnonzero(correct)
    attack_rows, broken_by = [], []
    say = progress or (lambda message: None)
    own = [("own", None)] if isinstance(model, TabularSNN) else [(None, None)]
    others = ([(surrogate_label(s), s) for s in config.surrogates]
              if isinstance(model, TabularSNN) else [])

    # (attack, target, surrogate, surrogate label, scope)
    jobs = [(a, model, None, label, "all") for a in ("pgd", "apgd_ce") if a in config.attacks
            for label, _ in own]
    if "apgd_dlr" in config.attacks and n_classes >= 3:  # DLR needs a third logit
        jobs += [("apgd_dlr", model, None, label, "survivors") for label, _ in own]
    if "apgd_ce" in config.attacks:
        jobs += [("apgd_ce", model, s, label, "survivors") for label, s in others]
    if "square" in config.attacks:
        jobs.append(("square", model, None, None, "survivors"))
    jobs += [("pgd", source, None, name, "survivors")
             for name, source in (transfer_sources or {}).items()]
    if config.linearized and isinstance(model, TabularSNN):
        jobs.append((LINEARIZED, model, LINEARIZING_SURROGATE,
                     surrogate_label(LINEARIZING_SURROGATE), LINEARIZED))

    with _restored_random_state():
        for norm, grid in grids.items():
            for attack, target, s, label, scope in jobs:
                rows = alive[norm] if scope == "survivors" else None
                frame = PerturbationFrame(X_ok, radii[norm], threat, rows, norm)
                name = (GRADIENT_FREE[norm] if attack == "square"
                        else attack if target is model else label)
                surrogate = label if target is model and attack != "square" else None
                say(f"{norm} {name}" + (f" surrogate={surrogate}" if surrogate else ""))
                ok = np.ones_like(alive[norm])
                if len(frame):
                    u_adv = _run_art(target, s, attack, frame, y_ok[frame.example], norm,
                                     config, n_classes, _derive(seed, norm, name, label),
                                     restarts=target is model and attack == "pgd")
                    x_adv = frame.adversarial(u_adv)
                    for k, r in enumerate(radii[norm]):
                        on = frame.point == k
                        threat.check(x_adv[on], frame.x0[on], norm, r, f"{name} eps={grid[k]}")
                    ok[frame.point, frame.example] = (
                        predict(model, x_adv, eot_samples=eot, seed=score_seed)
                        == y_ok[frame.example])
                if scope == LINEARIZED:
                    after = None
                else:
                    before = alive[norm]
                    after = alive[norm] = np.logical_and.accumulate(before & ok, axis=0)
                    broke_first = name + (f"[{surrogate}]" if surrogate else "")
                    for k, newly in enumerate(before & ~after):
                        first[norm][k, ok_rows[newly]] = broke_first
                for k, e in enumerate(grid):
                    accuracy = score(after[k] if scope == "survivors" else ok[k])
                    attack_rows.append({"norm": norm, "eps": float(e), "radius": radii[norm][k],
                                        "attack": name, "surrogate": surrogate, "scope": scope,
                                        "accuracy": accuracy})
                    if after is not None:
                        broken_by.append({"norm": norm, "eps": float(e), "attack": name,
                                          "surrogate": surrogate, "broke": int((~ok[k]).sum()),
                                          "first": int((before[k] & ~after[k]).sum())})
    robust_rows = [{"norm": norm, "eps": float(e), "radius": radii[norm][k],
                    "eps_raw": threat.raw_eps(e),
                    "accuracy": score(alive[norm][k])}
                   for norm, grid in grids.items() for k, e in enumerate(grid)]
    examples = {"rows": keep.tolist(),
                "first_broken_by": [{"norm": norm, "eps": float(e),
                                     "attack": first[norm][k].tolist()}
                                    for norm, grid in grids.items() for k, e in enumerate(grid)]}
    return {"attacks": attack_rows, "robust": robust_rows, "broken_by": broken_by,
            "examples": examples, "clean": score(np.ones(len(y_ok), bool))}


def random_search_l2(view: nn.Module, u: np.ndarray, y: np.ndarray, queries: int,
                     seed: int, p_init: float = 0.3) -> np.ndarray:
    """Gradient-free L2 attack on tabular rows: a random search on the sphere of radius 1 (in
    the PerturbationFrame's units; the last column, the frame's tag, is left alone), after
    Square's L2 scheme (Andriushchenko et al. 2020) without its image tiles. Each query moves a
    random subset of the features (a share p_init decaying as Square's schedule) by Gaussian
    noise as large as the mass already there plus a fresh share, rescales to the sphere, and is
    kept when the margin loss (true logit minus the largest other) falls; an example stops once
    misclassified. Hand-written because ART's Square L2 lays its budget on 5 x 5 image tiles of
    at least 2 x 2 pixels: a table of F < 100 features would sit in a padded image whose padding
    takes a share of the L2 budget, and its windows assume neighbouring pixels are related.
    """
    rng = np.random.default_rng(seed)
    d = u.shape[1] - 1
    delta = rng.standard_normal((len(u), d)).astype(np.float32)
    delta /= np.linalg.norm(delta, axis=1, keepdims=True) + 1e-12
    y_t = torch.as_tensor(y)

    @torch.no_grad()
    def margin(rows, candidate):
        x = u[rows].copy()
        x[:, :-1] += candidate
        logits = view(torch.as_tensor(x, device=_device(view))).cpu()
        true = logits.gather(1, y_t[rows, None])[:, 0]
        other = logits.scatter(1, y_t[rows, None], float("-inf")).max(1).values
        return torch.nan_to_num(true - other, nan=float("inf")).numpy()

    loss = margin(np.arange(len(u)), delta)
    for q in range(queries):
        active = np.flatnonzero(loss > 0)
        if not len(active):
            break
        share = p_init * 0.5 ** int(np.log2(1 + 10 * q / max(queries, 1)) + 1e-9)
        k = max(1, int(round(share * d)))
        current = delta[active]
        chosen = np.argsort(rng.random((len(active), d)), axis=1)[:, :k]
        step = np.zeros_like(current)
        mass = np.sqrt((np.take_along_axis(current, chosen, 1) ** 2).sum(1, keepdims=True)
                       + k / d)
        noise = rng.standard_normal((len(active), k)).astype(np.float32)
        np.put_along_axis(step, chosen, noise / np.linalg.norm(noise, axis=1, keepdims=True)
                          * mass, 1)
        proposal = current + step
        proposal /= np.linalg.norm(proposal, axis=1, keepdims=True) + 1e-12
        new = margin(active, proposal)
        better = new < loss[active]
        delta[active[better]] = proposal[better]
        loss[active[better]] = new[better]
    out = u.copy()
    out[:, :-1] += delta
    return out


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


def _classifier(view: nn.Module, input_shape, n_classes: int, clip_values=None):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=view, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                             nb_classes=n_classes, clip_values=clip_values,
                             device_type="gpu" if _device(view).type == "cuda" else "cpu")


def _n_classes(model: nn.Module, x: np.ndarray) -> int:
    view = attack_view(model)
    with torch.no_grad():
        return int(view(torch.as_tensor(x, device=_device(view))).shape[1])


def _run_art(target, surrogate, attack, frame, y, norm, config, n_classes, seed, *,
             restarts: bool = True) -> np.ndarray:
    """One attack on the attack view of `target` over the rows of `frame` (eps = 1 in its
    units); returns the adversarial stack in the frame. restarts=False: PGD starts once, from
    the clean point (transfer and linearized attacks: a diagnostic each, not the search for
    the worst case that the white-box PGD's random restarts are)."""
    from art.attacks.evasion import (AutoProjectedGradientDescent, ProjectedGradientDescent,
                                     SquareAttack)

    u = frame.encode()
    image = FeatureImage(u.shape[1]) if attack == "square" and norm == "linf" else None
    view = attack_view(target, surrogate, eot_samples=config.eot_samples, frame=frame,
                       image=image, memo=attack == "square", capped_range=attack != "square")
    _seed_all(seed)
    view.reseed(seed)
    view.track(y, norm)
    if attack == "square" and norm == "l2":
        return random_search_l2(view, u, y, config.square_queries, seed)
    art_input = image.to_image(u) if image is not None else u
    # Square indexes clip_values unconditionally: a box no perturbation of size <= 1 reaches
    # (the threat model's box is applied inside the view)
    box = (-2.0, float(u.max()) + 2.0) if attack == "square" else None
    classifier = _classifier(view, art_input.shape[1:], n_classes, box)
    common = dict(norm=NORMS[norm], batch_size=config.batch_size, verbose=False)
    if attack in ("pgd", LINEARIZED):  # step 2.5 eps / steps (Madry et al. 2018)
        art = ProjectedGradientDescent(classifier, eps=1.0, eps_step=2.5 / config.pgd_steps,
                                       max_iter=config.pgd_steps,
                                       num_random_init=config.pgd_restarts if restarts else 0,
                                       **common)
    elif attack in ("apgd_ce", "apgd_dlr"):  # first step 2 eps as in Croce & Hein 2020
        art = AutoProjectedGradientDescent(
            classifier, eps=1.0, eps_step=2.0, max_iter=config.apgd_steps,
            nb_random_init=config.apgd_restarts if surrogate is None else config.surrogate_restarts,
            loss_type="cross_entropy" if attack == "apgd_ce" else "difference_logits_ratio",
            **common)
    else:  # p_init 0.3, not ART's 0.8: ART fails when the first square is as high as the small
        # image (randint(0, 0)), which 0.8 gives for up to 8 features
        art = SquareAttack(classifier, eps=1.0, max_iter=config.square_queries, p_init=0.3,
                           nb_restarts=1, **common)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        adv = art.generate(art_input, y=y)
    adv = np.array(image.features(adv) if image is not None else adv)
    for row, u_row in view.witness.items():  # an example broken on the way stays broken
        adv[row] = u_row
    return adv


def _device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return torch.device("cpu") if param is None else param.device
