"""Paired statistics: the numbers by hand, and paired.json / the report's table from per-problem outcomes."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from mft.eval.outcomes import write_outcomes
from mft.eval.paired import paired, sign_test
from mft.report import write_compare, write_report

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"


def test_paired_difference_by_hand() -> None:
    x = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}
    y = {"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 1.0}  # "e" is not in x: left out
    got = paired(x, y)
    assert got is not None
    # d = 1, 0, 0, 1: mean 0.5; sample variance (4 x 0.25) / 3; se = sqrt(1/3) / 2
    se = 100 * math.sqrt(1 / 3) / 2
    assert (got.n, got.better, got.worse) == (4, 2, 0)
    assert got.difference == pytest.approx(50.0) and got.se == pytest.approx(se)
    assert (got.ci_low, got.ci_high) == pytest.approx((50 - 1.959964 * se, 50 + 1.959964 * se))
    assert got.p == pytest.approx(0.5)  # 2 discordant pairs, both one way: 2 x (1/2)^2
    assert paired(x, {"z": 1.0}) is None


def test_sign_test_by_hand() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(0, 5) == pytest.approx(2 / 32)
    assert sign_test(3, 10) == pytest.approx(2 * (1 + 13 + 78 + 286) / 2**13)
    assert sign_test(5, 5) == 1.0
    assert 0 < sign_test(600, 700) < 0.01  # large n: exact integers, no overflow


def _outcomes(path: Path, rows: dict[str, tuple[float, int, int]]) -> None:
    write_outcomes(
        path,
        [{"uid": u, "correct": {"single": s, "majority": m, "debate": d}} for u, (s, m, d) in rows.items()],
    )


@pytest.fixture
def with_outcomes(tmp_path: Path) -> Path:
    """The report fixture's arithmetic reproduce directory, with per-problem outcomes for some runs."""
    root = tmp_path / "arithmetic"
    shutil.copytree(FIXTURES / "arithmetic", root)
    _outcomes(
        root / "ours/iter_0/eval/outcomes.jsonl.gz",
        {"u1": (1 / 3, 0, 0), "u2": (2 / 3, 1, 1), "u3": (0.0, 0, 0), "u4": (1.0, 1, 0)},
    )
    _outcomes(
        root / "ours/iter_1/eval/outcomes.jsonl.gz", {"u1": (0, 0, 1), "u2": (0, 0, 0), "u3": (0, 0, 0)}
    )
    _outcomes(
        root / "ours/iter_2/eval/outcomes.jsonl.gz",
        {"u1": (0, 0, 1), "u2": (0, 0, 1), "u3": (0, 0, 0), "u4": (0, 0, 1)},
    )
    _outcomes(
        root / "majority/iter_2/eval/outcomes.jsonl.gz",
        {"u1": (0, 1, 0), "u2": (0, 0, 1), "u3": (0, 0, 1), "u4": (0, 0, 1)},
    )
    return root


def test_report_pairs_each_row_with_ours_on_the_same_problems(with_outcomes: Path) -> None:
    md = write_report(with_outcomes).read_text()
    rows = json.loads((with_outcomes / "paired.json").read_text())
    by = {(r["method"], r["iteration"]): r for r in rows}
    # the base model's debate (iteration 0: 0, 1, 0, 0) against Ours' debate at iteration 2 (1, 1, 0, 1)
    debate = by["debate", 2]
    assert debate["against"] == "ours" and debate["reading"] == "debate" and debate["n"] == 4
    assert debate["difference"] == pytest.approx(-50.0) and debate["p"] == pytest.approx(0.5)
    assert debate["se"] == pytest.approx(100 * math.sqrt(1 / 3) / 2)
    # at iteration 1 Ours read 3 problems: the pairs are those 3 (0, 1, 0 against 1, 0, 0: one each way)
    assert by["debate", 1]["n"] == 3 and by["debate", 1]["difference"] == pytest.approx(0.0)
    assert by["debate", 1]["p"] == 1.0
    # Majority FT in its table reading, the majority vote (1, 0, 0, 0) against Ours (1, 1, 0, 1)
    assert by["majority_ft", 2]["reading"] == "majority"
    assert by["majority_ft", 2]["difference"] == pytest.approx(-50.0)
    assert by["base", 2]["reading"] == "single"  # Base is one agent's answer
    assert ("majority_ft", 1) not in by  # no outcomes kept for that evaluation
    assert {r["method"] for r in rows} == {"base", "majority", "debate", "majority_ft"}
    assert "## Paired differences against Ours" in md
    assert (
        "| Debate | debate | +0.0 [-113.2, +113.2], p 1 | -50.0 [" in md
        and "-50.0 [-106.6, +6.6], p 0.5 |" in md
    )
    assert (
        "no per-problem outcomes kept (no paired row): Majority FT, Ours (no critics), Single-agent FT" in md
    )


def test_compare_writes_every_inputs_rows(with_outcomes: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    md = write_compare([with_outcomes, FIXTURES / "gsm8k"], out).read_text()
    rows = json.loads((out / "paired.json").read_text())
    assert {r["input"] for r in rows} == {"arithmetic"}  # gsm8k kept no outcomes
    assert "| Debate | -50.0 [-106.6, +6.6], p 0.5 |" in md  # the input's last iteration


def test_no_outcomes_no_paired_section(tmp_path: Path) -> None:
    root = tmp_path / "arithmetic"
    shutil.copytree(FIXTURES / "arithmetic", root)
    assert "Paired differences" not in write_report(root).read_text()
    assert not (root / "paired.json").exists()


def test_compare_reads_a_reproduce_over_seeds_as_its_seeds_mean(with_outcomes: Path, tmp_path: Path) -> None:
    """`mft compare` of `mft reproduce --seeds` directories: a column per input, its seeds' mean."""
    seeds = tmp_path / "over-seeds"
    for s in ("0", "1"):
        shutil.copytree(with_outcomes, seeds / f"seed_{s}")
    (seeds / "seeds.json").write_text(
        json.dumps({"seeds": {"0": "seed_0", "1": "seed_1"}, "task": "arithmetic"})
    )
    # seed 1: Ours' debate reads 67.6 after iteration 2, and is right on all four problems there
    res = seeds / "seed_1/ours/iter_2/eval/results.json"
    data = json.loads(res.read_text())
    data["accuracy"]["debate"]["mean"] = 0.676
    res.write_text(json.dumps(data))
    ours_2 = {"u1": (0, 0, 1), "u2": (0, 0, 1), "u3": (0, 0, 1), "u4": (0, 0, 1)}
    _outcomes(seeds / "seed_1/ours/iter_2/eval/outcomes.jsonl.gz", ours_2)
    shutil.rmtree(seeds / "seed_1/no_critic")  # a method one seed lacks
    out = tmp_path / "cmp"
    md = write_compare([seeds, seeds / "seed_0"], out).read_text()
    assert "| method | over-seeds | over-seeds/seed_0 |" in md
    # the mean of 57.6 and 67.6, and their sample s.d. (7.07) over sqrt(2); one seed's own number beside it
    assert "| Ours | 62.6 ± 5.0 | 57.6 ± 2.1 |" in md
    assert re.search(r"\| Ours \(no critics\) \| n/a \| \d", md)
    # the base's debate (0, 1, 0, 0) minus Ours' at iteration 2: -50 at seed 0 (1, 1, 0, 1), -75 at seed 1
    # (1, 1, 1, 1); mean -62.5, seed s.e. 12.5, t interval with 1 degree of freedom (12.706 x 12.5)
    assert "| Debate | -62.5 ± 12.5 [-221.3, +96.3] | -50.0 [-106.6, +6.6], p 0.5 |" in md
    rows = json.loads((out / "paired.json").read_text())
    got = {(r["input"], r.get("seed")) for r in rows if r["method"] == "debate" and r["iteration"] == 2}
    assert got == {
        ("over-seeds", "0"),
        ("over-seeds", "1"),
        ("over-seeds", "mean"),
        ("over-seeds/seed_0", None),
    }
