"""What holds: each claim's figure, interval and verdict from hand-built studies (numbers by hand)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mft.eval.metrics import Estimate
from mft.report.document import table_markdown
from mft.report.holds import claims, holds_table, pearson, verdict
from mft.report.load import Iteration, Run, Study

Z = 1.959963984540054


def _it(
    k: int, outcomes: dict[str, tuple[float, float, float]], diversity: dict[str, float] | None = None
) -> Iteration:
    acc = {
        r: Estimate(sum(o[i] for o in outcomes.values()) / len(outcomes), 0.0, len(outcomes))
        for i, r in enumerate(("single", "majority", "debate"))
    }
    div = {m: Estimate(v, 0.01, len(outcomes)) for m, v in (diversity or {}).items()}
    keyed = {u: dict(zip(("single", "majority", "debate"), o, strict=True)) for u, o in outcomes.items()}
    return Iteration(k, acc, len(outcomes), None, diversity=div, outcomes=keyed)


def _run(key: str, iterations: dict[int, Iteration]) -> Run:
    return Run(key, key, Path(key), "arithmetic", {}, iterations, {})


def _study(base: Iteration, runs: list[Run]) -> Study:
    return Study(Path("s"), "s", "reproduce", "arithmetic", runs, base, None)


# base model, iteration 0: per problem (single, majority, debate)
BASE = {"a": (1 / 3, 0, 0), "b": (2 / 3, 1, 1), "c": (0.0, 0, 1), "d": (1.0, 1, 1)}


def test_orderings_paired_over_problems_with_each_seed_shown() -> None:
    base = _it(0, BASE, {"consensus": 0.8, "embedding_dissimilarity": 0.01, "kl": 0.0})
    ours_1 = _it(
        1, {"a": (0, 0, 1), "b": (0, 0, 1), "c": (0, 0, 1), "d": (0, 0, 0)}, {"consensus": 0.6, "kl": 0.1}
    )
    ours_2 = _it(
        1, {"a": (0, 0, 1), "b": (0, 0, 1), "c": (0, 0, 0), "d": (0, 0, 1)}, {"consensus": 0.7, "kl": 0.1}
    )
    star = _it(1, {"a": (0, 0, 1), "b": (0, 0, 1), "c": (0, 0, 1), "d": (0, 0, 1)})
    seeds = [
        _study(base, [_run("ours", {1: ours_1}), _run("star", {1: star})]),
        _study(base, [_run("ours", {1: ours_2}), _run("star", {1: star})]),
    ]
    got = {c.claim: c for c in claims(seeds)}
    # Base < Majority: majority - single per problem = -1/3, 1/3, 0, 0 (the same at both seeds)
    bm = got["Base < Majority"]
    se = 100 * math.sqrt((1 / 9 + 1 / 9) / 3) / 2
    assert bm.figure == pytest.approx(0.0) and bm.ci_high == pytest.approx(Z * se)
    assert bm.seeds == pytest.approx([0.0, 0.0]) and bm.verdict == "not separated"
    # Debate < Ours: seed 1 (1,1,1,0) - (0,1,1,1) = 1,0,0,-1; seed 2 (1,1,0,1) - base = 1,0,-1,0;
    # averaged over seeds per problem: 1, 0, -0.5, -0.5 -> mean 0
    do = got["Debate < Ours"]
    assert do.seeds == pytest.approx([0.0, 0.0]) and do.figure == pytest.approx(0.0)
    # STaR < Ours: STaR is right everywhere: Ours - STaR = -25 at both seeds
    so = got["STaR < Ours"]
    assert so.seeds == pytest.approx([-25.0, -25.0]) and so.figure == pytest.approx(-25.0)
    d = [0.0, 0.0, -0.5, -0.5]  # per problem, averaged over the seeds
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    assert so.ci_high == pytest.approx(100 * (mean + Z * sd / 2))
    # consensus falls 0.2 and 0.1: figure +0.15, se per seed hypot(0.01, 0.01), over 2 seeds
    cons = got["consensus falls for Ours (iteration 0 to 1)"]
    half = Z * math.sqrt(2 * 2 * 0.01**2) / 2
    assert cons.seeds == pytest.approx([0.2, 0.1]) and cons.figure == pytest.approx(0.15)
    assert (cons.ci_low, cons.ci_high) == pytest.approx((0.15 - half, 0.15 + half))
    assert cons.verdict == "holds"
    assert "embedding dissimilarity rises for Ours (iteration 0 to 1)" not in got  # not measured at 1
    assert not any("saturates" in c for c in got)  # one iteration: no such claim
    # KL between copies of the base model is 0 by construction: its rise from iteration 0 is not a claim
    assert not any(c.startswith("KL between critics rises") for c in got)
    md = table_markdown(holds_table(list(got.values())))
    assert (
        "| STaR < Ours | -25.0 points |" in md
        and "| consensus falls for Ours (iteration 0 to 1) | +0.1500" in md
    )


def test_saturation_from_three_iterations() -> None:
    base = _it(0, BASE)
    ones = {"a": (0, 0, 1), "b": (0, 0, 0), "c": (0, 0, 0), "d": (0, 0, 0)}
    ours = {1: _it(1, ones), 3: _it(3, {"a": (0, 0, 1), "b": (0, 0, 1), "c": (0, 0, 1), "d": (0, 0, 0)})}
    # Single-agent FT is read by its debate (as the table): right on a and b at 1, on a only at 3
    single = {1: _it(1, {**ones, "b": (0, 0, 1)}), 3: _it(3, ones)}
    got = {c.claim: c for c in claims([_study(base, [_run("ours", ours), _run("single_ft", single)])])}
    assert got["Ours rises from iteration 1 to 3"].figure == pytest.approx(50.0)
    # (Ours_3 - Ours_1) - (SAFT_3 - SAFT_1) = 0 - 0, 1 + 1, 1 - 0, 0 - 0 -> mean 75
    sat = got["Single-agent FT saturates while Ours rises (1 to 3)"]
    assert sat.figure == pytest.approx(75.0) and sat.seeds == pytest.approx([75.0])


def test_verdict_needs_the_interval_and_every_seed() -> None:
    assert verdict(0.1, 2.0, [1.0, 0.5]) == "holds"
    assert verdict(0.1, 2.0, [1.0, -0.5]) == "not separated"  # a seed disagrees
    assert verdict(-2.0, -0.1, [-1.0]) == "reversed"
    assert verdict(-2.0, 0.1, [-1.0]) == "not separated"
    assert verdict(0.1, 2.0, []) == "holds"  # pooled: the interval alone


def test_pearson_by_hand() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert pearson([1, 1], [1, 2]) is None


def test_tracking_pools_every_finetuned_iteration_of_every_seed() -> None:
    base = _it(0, BASE, {"kl": 0.0})
    right = {"a": (0, 0, 1), "b": (0, 0, 1), "c": (0, 0, 0), "d": (0, 0, 0)}  # debate 0.5
    up = {**right, "c": (0, 0, 1)}  # debate 0.75
    runs = [
        {1: _it(1, right, {"kl": 0.1}), 2: _it(2, up, {"kl": 0.3})},
        {1: _it(1, up, {"kl": 0.2}), 2: _it(2, right, {"kl": 0.25})},
    ]
    got = {c.claim: c for c in claims([_study(base, [_run("ours", r)]) for r in runs])}
    kl = got["KL between critics tracks accuracy"]
    r = pearson([0.1, 0.3, 0.2, 0.25], [0.5, 0.75, 0.75, 0.5])  # iteration 0 (the base) is not a point
    assert kl.figure == pytest.approx(r) and kl.seeds == []
    assert kl.ci_low == pytest.approx(math.tanh(math.atanh(r) - Z)) and kl.basis.startswith("4 ")


def test_diversity_rises_over_the_iterations_of_finetuning_from_iteration_1() -> None:
    base = _it(0, BASE, {"kl": 0.0})
    run = {1: _it(1, BASE, {"kl": 0.1}), 2: _it(2, BASE, {"kl": 0.3})}
    got = {c.claim: c for c in claims([_study(base, [_run("ours", run)])])}
    assert got["KL between critics rises for Ours (iteration 1 to 2)"].figure == pytest.approx(0.2)


_HASHED = """
import random
from tests.unit.test_holds import _it, _run, _study
from mft.report.holds import claims
rng = random.Random(0)
rows = {f"test-{i}": (rng.randrange(4) / 3, rng.randrange(2), rng.randrange(2)) for i in range(300)}
base = _it(0, rows)
ours = _it(1, {u: (rng.randrange(4) / 3, rng.randrange(2), rng.randrange(2)) for u in rows})
got = claims([_study(base, [_run("ours", {1: ours})])])
print(repr([(c.claim, c.figure, c.ci_low, c.ci_high, c.seeds) for c in got]))
"""


def test_claims_are_the_same_floats_at_every_hash_seed() -> None:
    """holds.json is rewritten by every `mft report`: the same files must give the same bytes, whatever order
    a set of problem ids iterates in (it changes with PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]

    def run(seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": f"{root}{os.pathsep}{root / 'src'}"}
        return subprocess.run(
            [sys.executable, "-c", _HASHED], env=env, cwd=root, capture_output=True, text=True, check=True
        ).stdout

    first = run("1")
    assert "Base < Majority" in first
    assert all(run(seed) == first for seed in ("2", "3"))
