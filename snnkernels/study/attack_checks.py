"""The report's statements about the attacks themselves, from the cell records: are they strong
enough (attack_strength_checks), and what may they change (threat_model_section)."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean, median

from scipy.stats import binomtest

from .stats import arm_at, is_grid

# A working attack picks a perturbation per example, so at the grid's largest eps (1 standard
# deviation per feature) it should leave almost nothing.
MAX_WORST_CASE_AT_LARGEST_EPS = 0.05
NORM_LABELS = {"linf": "L∞", "l2": "L2"}
MLP = "mlp"
# The attack budgets below which a run's attacks are called weak (the quick preset's are).
FULL_STRENGTH = {"apgd_steps": 100, "apgd_restarts": 3, "square_queries": 1000}
SIGN_TEST_ALPHA = 0.05


def _table(headers, rows) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows])


def _by(cells, key):
    groups = defaultdict(list)
    for c in cells:
        groups[key(c)].append(c)
    return groups


def attack_strength_checks(cells: list[dict]) -> tuple[list[str], list[str]]:
    """(markdown lines, warnings). Two checks, each with its numbers:
    - the worst case at the largest eps of each norm, per table: the largest mean over seeds of
      any arm, flagged above MAX_WORST_CASE_AT_LARGEST_EPS, next to the MLP's (exact gradients,
      nothing to mask): when the MLP keeps as much, the largest eps is small for that table
      rather than the attacks weak on the spiking arms;
    - APGD-CE at least as strong as PGD (both through the model's own surrogate, every example
      attacked): per table and norm the largest mean difference APGD - PGD over the eps grid,
      and at each eps the cells where APGD left more examples correct against those where it
      left fewer. Both attacks start at random points, so either can miss an example the other
      breaks; a table is flagged when, at some eps, APGD is weaker in significantly more cells
      than it is stronger (exact one-sided sign test, p < SIGN_TEST_ALPHA, not corrected for
      the eps grid, so it errs towards flagging).
    """
    lines, warnings = [], []
    grid = is_grid(cells)
    # in a width / T grid each arm is judged at each point (arm_at names it), not pooled
    name = lambda c: arm_at(c, grid)
    worst = []
    for (dataset, norm), group in sorted(_by(
            [(c, r) for c in cells for r in c.get("robust", [])],
            lambda cr: (cr[0]["dataset"], cr[1]["norm"])).items()):
        largest = max(r["eps"] for _, r in group)
        at_largest = [(c, r) for c, r in group if r["eps"] == largest]
        per_arm = _by(at_largest, lambda cr: name(cr[0]))
        means = {a: mean(r["accuracy"] for _, r in v) for a, v in per_arm.items()}
        arm, value = max(means.items(), key=lambda item: item[1])
        hidden = per_arm[arm][0][0].get("hidden")  # the MLP of the same width
        mlps = [r["accuracy"] for c, r in at_largest
                if c["arm"] == MLP and c.get("hidden") == hidden]
        mlp = mean(mlps) if mlps else None
        bad = value > MAX_WORST_CASE_AT_LARGEST_EPS
        worst.append([dataset, NORM_LABELS.get(norm, norm), f"{largest:g}", arm, f"{value:.3f}",
                      "n/a" if mlp is None else f"{mlp:.3f}", "FLAG" if bad else "ok"])
        if bad:
            warning = (f"worst case on {dataset} {NORM_LABELS.get(norm, norm)} at the largest "
                       f"ε={largest:g} is {value:.3f} for {arm} (above "
                       f"{MAX_WORST_CASE_AT_LARGEST_EPS:g})")
            if mlp is not None and mlp > MAX_WORST_CASE_AT_LARGEST_EPS:
                warning += (f"; the MLP, with exact gradients, keeps {mlp:.3f} too: the largest "
                            f"ε may be small for this table rather than the attacks weak")
            else:
                warning += ": the attacks may be too weak"
            warnings.append(warning)
    lines += [f"Worst case at the largest ε (highest mean over seeds of any arm; flagged above "
              f"{MAX_WORST_CASE_AT_LARGEST_EPS:g}), and the MLP's:", ""]
    lines += _table(["dataset", "norm", "largest ε", "arm", "worst case", "MLP", "status"],
                    worst)
    pairs = defaultdict(list)
    for c in cells:
        own = {(a["norm"], a["eps"], a["attack"]): a["accuracy"] for a in c.get("attacks", [])
               if a.get("scope") == "all" and a["attack"] in ("pgd", "apgd_ce")
               and a.get("surrogate") in ("own", None)}
        for (norm, eps, attack), acc in own.items():
            if attack == "apgd_ce" and (norm, eps, "pgd") in own:
                pairs[(c["dataset"], norm, eps)].append(acc - own[(norm, eps, "pgd")])
    rows = []
    for (dataset, norm), items in sorted(_by(pairs.items(), lambda kv: kv[0][:2]).items()):
        diffs = {key[2]: mean(v) for key, v in items}
        eps, gap = max(diffs.items(), key=lambda item: item[1])
        weaker = {key[2]: sum(d > 0 for d in v) for key, v in items}
        stronger = {key[2]: sum(d < 0 for d in v) for key, v in items}
        # per eps: is APGD weaker in more cells than chance between two random starts allows?
        p = {e: binomtest(weaker[e], weaker[e] + stronger[e], alternative="greater").pvalue
             if weaker[e] else 1.0 for e in weaker}
        worst_eps = min(p, key=p.get)
        bad = p[worst_eps] < SIGN_TEST_ALPHA
        label = NORM_LABELS.get(norm, norm)
        rows.append([dataset, label, f"{gap:+.3f} at ε={eps:g}",
                     f"{sum(weaker.values())}/{sum(stronger.values())}",
                     f"{p[worst_eps]:.2g} at ε={worst_eps:g}", "FLAG" if bad else "ok"])
        if bad:
            warnings.append(f"APGD-CE is weaker than PGD on {dataset} {label} at ε={worst_eps:g}:"
                            f" it left more examples correct in {weaker[worst_eps]} cells and "
                            f"fewer in {stronger[worst_eps]} (sign test p = {p[worst_eps]:.2g}; "
                            f"mean accuracy difference {diffs[worst_eps]:+.3f})")
    lines += ["", "APGD-CE against PGD (own surrogate, every example attacked): the largest mean "
              "accuracy difference APGD − PGD over the ε grid; the (cell, ε) points where APGD "
              "left more / fewer examples correct than PGD; the smallest one-sided sign-test p "
              f"over the grid that APGD is weaker in more cells than it is stronger (flagged "
              f"below {SIGN_TEST_ALPHA:g}):", ""]
    lines += _table(["dataset", "norm", "APGD − PGD (largest)", "APGD weaker / stronger",
                     "sign test p", "status"], rows)
    return lines, warnings


def threat_model_section(cells: list[dict], attack: dict) -> list[str]:
    """The threat model in one paragraph, and eps in raw feature units next to standardized."""
    immutable = attack.get("immutable") or []
    categorical = attack.get("perturb_categorical")
    text = (
        "Threat model: the attacker changes one test row at a time, in standardized units (the "
        "training part's mean and std). Every changed row is clipped to each feature's training "
        "range (train min and max; a test value already outside it may stay where it is). "
        + ("One-hot groups move, and after every step each is projected to a valid category; "
           if categorical else "One-hot groups (categories) never move; ")
        + "binary features never move"
        + (f"; nor do {', '.join(immutable)}" if immutable else "")
        + ". Budgets count the mutable features only: L∞ ε bounds each feature's change; the "
        "L2 radius is ε·√F, F the number of mutable features, so an L2 ε is a root-mean-square "
        "change per feature and compares across tables. Raw units below: the median over the "
        "mutable continuous features of std × ε.")
    rows = []
    for (dataset, norm, eps), group in sorted(_by(
            [(c, r) for c in cells for r in c.get("robust", [])],
            lambda cr: (cr[0]["dataset"], cr[1]["norm"], cr[1]["eps"])).items()):
        radius = [r.get("radius") for _, r in group if r.get("radius") is not None]
        raw = [r.get("eps_raw") for _, r in group if r.get("eps_raw") is not None]
        mutable = [c.get("mutable_features") for c, _ in group
                   if c.get("mutable_features") is not None]
        rows.append([dataset, NORM_LABELS.get(norm, norm), f"{eps:g}",
                     f"{median(radius):.3g}" if radius else "n/a",
                     f"{median(raw):.3g}" if raw else "n/a",
                     f"{median(mutable):g}" if mutable else "n/a"])
    weak = [f"{key} {attack[key]} < {least}" for key, least in FULL_STRENGTH.items()
            if isinstance(attack.get(key), int) and attack[key] < least]
    if weak:
        text += (" These attacks are below the study's full strength (" + ", ".join(weak)
                 + "): a smoke test, not evidence of robustness.")
    return [text, ""] + _table(["dataset", "norm", "ε (std units)", "radius (std units)",
                                "ε (raw units, median feature)", "mutable features"], rows)
