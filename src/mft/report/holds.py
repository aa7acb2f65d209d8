"""What holds: each ordering the paper claims, read from a reproduce's files, with an interval and a verdict.

A claim "X < Y" is read as the difference Y - X (so a positive figure is the paper's direction):
- accuracy orderings at Ours' last iteration K (for the paper's one-iteration protocol, K = 1), problem by
  problem: per problem, the difference averaged over the seeds; the figure is its mean in points and the
  95% interval is +/- 1.96 standard errors over the problems (`mft.eval.paired`). Base < Majority < Debate
  are the base model's three readings at iteration 0 (the same debates);
- Cooperative (base) < Ours (cooperative) (the paper's Table 3), when that run is present: its last
  iteration against its own iteration 0 (the base society asked to cooperate), both by their debate;
- Ours rising, and rising more than Single-agent FT (the paper's Fig. 1: single-agent FT saturates), from
  iteration 1 to K, when K >= 3: (Ours_K - Ours_1) and (Ours_K - Ours_1) - (SAFT_K - SAFT_1) per problem;
- each diversity measure rising for Ours, from iteration 1 to K (from the base society, iteration 0, when
  K = 1): the difference of the two means (consensus falling: less agreement is more diversity), interval
  +/- 1.96 sqrt(se_start^2 + se_K^2) averaged over seeds (the measures keep no per-problem values, so this is
  unpaired and wider than a paired one). A measure that is 0 by construction at the base (the KL between
  copies of one model) is not read from there;
- diversity tracking accuracy: Pearson's r between a measure (signed so that higher is more diverse) and the
  table accuracy over every finetuned method's iterations 1..K at every seed, its interval by Fisher's z.

Verdict: "holds" when the interval lies above 0 and every seed's own figure is above 0; "reversed" when the
interval lies below 0 and every seed's figure is below 0; otherwise "not separated" (for the correlation,
which pools the seeds, the interval alone decides). One seed is a study of one seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mft import methods
from mft.eval.metrics import mean_se
from mft.eval.paired import Z95
from mft.report.document import Document, Heading, Para, Table
from mft.report.load import Run, Study
from mft.report.paired import AGAINST, scores_of
from mft.report.tables import DIVERSITY_LABELS

Scores = dict[str, float]  # uid -> a problem's score in [0, 1]
OURS_READING = methods.reading_of(AGAINST)
# the paper's diversity measures, and whether a larger value is more diverse
DIVERSITY = {"consensus": False, "embedding_dissimilarity": True, "kl": True, "held_out_nll": True}
HOLDS_NOTE = (
    "Each claim of the paper read from this run: the figure is the claimed-larger side minus the other "
    "(positive: the paper's direction), in points for accuracy. Accuracy claims are paired problem by "
    "problem (the per-problem difference averaged over seeds; 95% interval over problems); diversity "
    "claims compare two means (unpaired); the correlation is Pearson's r with Fisher's interval. "
    "holds: the interval is above 0 and every seed agrees; reversed: below 0 and every seed agrees; "
    "otherwise not separated. The rows are in holds.json."
)


@dataclass(frozen=True)
class Claim:
    claim: str
    figure: float
    ci_low: float
    ci_high: float
    seeds: list[float]  # each seed's own figure (empty for a pooled one)
    verdict: str
    basis: str
    unit: str  # "points" or "" (a diversity measure's own unit, or r)


def _last(runs: list[Run | None]) -> int:
    """The last iteration every seed's run has evaluated (0 when one has none)."""
    return min(max(r.iterations, default=0) if r is not None else 0 for r in runs)


def verdict(low: float, high: float, seeds: list[float]) -> str:
    if low > 0 and all(s > 0 for s in seeds):
        return "holds"
    if high < 0 and all(s < 0 for s in seeds):
        return "reversed"
    return "not separated"


def _paired_claim(
    text: str, basis: str, per_seed: list[list[Scores | None]], combine: Callable[[list[float]], float]
) -> Claim | None:
    """`combine` maps a problem's scores (one per side) to its difference; None if a seed lacks a side."""
    diffs: dict[str, list[float]] = {}
    seed_figures = []
    for sides in per_seed:
        if any(s is None for s in sides):
            return None
        shared = set.intersection(*(set(s) for s in sides if s is not None))
        if not shared:
            return None
        # in a fixed order, so the sums (and holds.json) are the same bytes at every PYTHONHASHSEED
        d = {uid: combine([s[uid] for s in sides if s is not None]) for uid in sorted(shared)}
        seed_figures.append(100 * sum(d.values()) / len(d))
        for uid, v in d.items():
            diffs.setdefault(uid, []).append(v)
    est = mean_se([sum(v) / len(v) for v in diffs.values() if len(v) == len(per_seed)])
    mean, half = 100 * est.mean, 100 * Z95 * est.se
    return Claim(
        text,
        mean,
        mean - half,
        mean + half,
        seed_figures,
        verdict(mean - half, mean + half, seed_figures),
        basis,
        "points",
    )


def accuracy_claims(seeded: list[Study]) -> list[Claim]:
    ours = [s.run(AGAINST) for s in seeded]
    k = _last(ours)
    cooperative = _cooperative_claim(seeded)  # read from its own run, with or without Ours
    if k < 1:
        return [cooperative] if cooperative else []
    out: list[Claim | None] = []
    base = [s.base for s in seeded]
    diff = lambda v: v[0] - v[1]  # noqa: E731
    for hi, lo in (("majority", "single"), ("debate", "majority")):
        text = "Base < Majority" if lo == "single" else "Majority < Debate"
        out.append(
            _paired_claim(
                text, "base model, iteration 0", [[scores_of(b, hi), scores_of(b, lo)] for b in base], diff
            )
        )
    ours_k = [scores_of(r.iterations.get(k), OURS_READING) for r in ours if r is not None]
    out.append(
        _paired_claim(
            "Debate < Ours",
            f"iteration {k} against the base's debate",
            [[o, scores_of(b, "debate")] for o, b in zip(ours_k, base, strict=True)],
            diff,
        )
    )
    for key in methods.BEATEN_BY_OURS:
        runs = [s.run(key) for s in seeded]
        if any(r is None for r in runs):
            continue
        reading = methods.reading_of(key)
        sides = [
            [o, scores_of(r.iterations.get(k), reading)]
            for o, r in zip(ours_k, runs, strict=True)
            if r is not None
        ]
        out.append(
            _paired_claim(
                f"{methods.LABELS[key]} < Ours", f"iteration {k}, its {reading} reading", sides, diff
            )
        )
    out.append(cooperative)
    if k >= 3:
        ours_1 = [scores_of(r.iterations.get(1), OURS_READING) for r in ours if r is not None]
        out.append(
            _paired_claim(
                f"Ours rises from iteration 1 to {k}",
                "Ours' debate",
                [[a, b] for a, b in zip(ours_k, ours_1, strict=True)],
                diff,
            )
        )
        saft = [s.run(methods.SATURATES) for s in seeded]
        if all(r is not None for r in saft):
            reading = methods.reading_of(methods.SATURATES)
            sides = [
                [a, b, scores_of(r.iterations.get(k), reading), scores_of(r.iterations.get(1), reading)]
                for a, b, r in zip(ours_k, ours_1, saft, strict=True)
                if r is not None
            ]
            out.append(
                _paired_claim(
                    f"{methods.LABELS[methods.SATURATES]} saturates while Ours rises (1 to {k})",
                    "(Ours_K - Ours_1) - (SAFT_K - SAFT_1)",
                    sides,
                    lambda v: (v[0] - v[1]) - (v[2] - v[3]),
                )
            )
    return [c for c in out if c is not None]


def _cooperative_claim(seeded: list[Study]) -> Claim | None:
    """The paper's Table 3: the method improves a cooperative society on its own base (its last iteration
    against its iteration 0, both by their debate)."""
    runs = [s.run(methods.COOPERATIVE) for s in seeded]
    if any(r is None for r in runs) or (k := _last(runs)) < 1:
        return None
    sides = [
        [scores_of(r.iterations.get(k), "debate"), scores_of(r.iterations.get(0), "debate")]
        for r in runs
        if r
    ]
    label = methods.LABELS[methods.COOPERATIVE]
    return _paired_claim(
        f"{methods.LABELS['cooperative_base']} < {label}",
        f"iteration {k} against its iteration 0",
        sides,
        lambda v: v[0] - v[1],
    )


def diversity_claims(seeded: list[Study]) -> list[Claim]:
    ours = [s.run(AGAINST) for s in seeded]
    k = _last(ours)
    if k < 1:
        return []
    start = 1 if k >= 2 else 0  # over the iterations of finetuning; at K = 1 from the base society
    out = []
    for measure, up in DIVERSITY.items():
        figures, ses = [], []
        for study, run in zip(seeded, ours, strict=True):
            at = study.base if start == 0 else run.iterations.get(start) if run else None
            first = at.diversity.get(measure) if at else None
            last = run.iterations[k].diversity.get(measure) if run and k in run.iterations else None
            # 0 exactly at the base (KL between copies of one model): rising from it says nothing
            if first is None or last is None or (start == 0 and first.mean == 0):
                break
            figures.append((last.mean - first.mean) * (1 if up else -1))
            ses.append(math.hypot(first.se, last.se))
        else:
            mean = sum(figures) / len(figures)
            half = Z95 * math.sqrt(sum(se**2 for se in ses)) / len(ses)
            word = "rises" if up else "falls"
            text = f"{DIVERSITY_LABELS[measure]} {word} for Ours (iteration {start} to {k})"
            out.append(
                Claim(
                    text,
                    mean,
                    mean - half,
                    mean + half,
                    figures,
                    verdict(mean - half, mean + half, figures),
                    "Ours' diversity",
                    "",
                )
            )
    return out


def tracking_claims(seeded: list[Study]) -> list[Claim]:
    out = []
    for measure, up in DIVERSITY.items():
        xs, ys = [], []
        for study in seeded:
            for run in study.runs:
                reading = methods.reading_of(run.key)
                for k, it in run.iterations.items():
                    if k >= 1 and measure in it.diversity and reading in it.accuracy:
                        xs.append(it.diversity[measure].mean * (1 if up else -1))
                        ys.append(it.accuracy[reading].mean)
        r = pearson(xs, ys)
        if r is None or len(xs) < 4:
            continue
        z, half = math.atanh(max(-0.999999, min(0.999999, r))), Z95 / math.sqrt(len(xs) - 3)
        low, high = math.tanh(z - half), math.tanh(z + half)
        basis = f"{len(xs)} (method, iteration, seed) points"
        out.append(
            Claim(
                f"{DIVERSITY_LABELS[measure]} tracks accuracy",
                r,
                low,
                high,
                [],
                verdict(low, high, []),
                basis,
                "r",
            )
        )
    return out


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def claims(seeded: list[Study]) -> list[Claim]:
    """Every claim this study (one Study per seed, the same problems) can read."""
    return accuracy_claims(seeded) + diversity_claims(seeded) + tracking_claims(seeded)


def _num(x: float, unit: str) -> str:
    return f"{x:+.1f}" if unit == "points" else f"{x:+.4f}" if unit == "" else f"{x:+.2f}"


def holds_table(found: list[Claim]) -> Table:
    body = [
        [
            c.claim,
            _num(c.figure, c.unit) + (" points" if c.unit == "points" else " (r)" if c.unit == "r" else ""),
            f"[{_num(c.ci_low, c.unit)}, {_num(c.ci_high, c.unit)}]",
            ", ".join(_num(s, c.unit) for s in c.seeds) or "pooled",
            c.verdict,
            c.basis,
        ]
        for c in found
    ]
    return Table(["claim (paper)", "figure", "95% interval", "each seed", "verdict", "read from"], body)


def holds_json(found: list[Claim]) -> bytes:
    return (json.dumps([asdict(c) for c in found], indent=2) + "\n").encode()


def holds_blocks(doc: Document, seeded: list[Study]) -> None:
    """The "What holds" section and holds.json, when the study can read any claim."""
    found = claims(seeded)
    if not found:
        return
    doc.data["holds.json"] = holds_json(found)
    doc.blocks += [Heading(2, "What holds"), holds_table(found), Para(HOLDS_NOTE)]
