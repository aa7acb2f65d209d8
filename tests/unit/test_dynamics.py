"""The debate-dynamics diagnostics (`mft.eval.dynamics`) and the report section that shows them: counted by
hand on small debates whose gold answers are known."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from mft.eval.dynamics import answer_changes, target_precision
from mft.records import DebateRecord, Message, Problem, append_jsonl
from mft.report import write_report
from mft.tasks import get_task
from tests.unit.test_report import copy_fixture

EQ = get_task("arithmetic").is_equivalent


def record(pid: str, gold: str, rounds: list[list[str | None]], consensus: str | None) -> DebateRecord:
    """A debate on one problem whose answers per round per agent are `rounds` (the text is the answer)."""
    n = len(rounds[0])
    split = "train" if pid.startswith("train") else "test"
    conversations = [
        [
            Message(role=role, content=str(rounds[i // 2][slot]))
            for i, role in enumerate(["user", "assistant"] * len(rounds))
        ]
        for slot in range(n)
    ]
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=pid, question="1+1", answer=gold, split=split),
        agents=[[f"a{s}" for s in range(n)] for _ in rounds],
        responses=[[str(a) for a in r] for r in rounds],
        answers=rounds,
        conversations=conversations,
        consensus=consensus,
        round_consensus=[consensus for _ in rounds],
        correct=consensus is not None and EQ(consensus, gold),
    )


# gold 2 / 5 / 7; per agent round 1 -> round 2
TEST = [
    record("test-a", "2", [["2", "3", "2"], ["3", "3", "2"]], "3"),  # right->wrong (agent 0), wrong stays
    record("test-b", "5", [["4", None, "5"], ["5", "5", "5"]], "5"),  # two wrong->right (one was missing)
    record("test-c", "7", [["7", "7", "1"], ["7", "7", "1"]], "7"),  # nothing changes
]


def test_answer_changes_count_each_agents_first_and_last_answer() -> None:
    c = answer_changes(TEST, EQ)
    assert c is not None
    # right in round 1: a0 a2 | b2 | c0 c1 = 5; wrong: a1 | b0 b1 | c2 = 4
    assert (c.right_first, c.wrong_first, c.right_to_wrong, c.wrong_to_right) == (5, 4, 1, 2)
    assert c.broken == pytest.approx(1 / 5) and c.fixed == pytest.approx(2 / 4)
    one_round = [record("test-d", "2", [["2", "1", "2"]], "2")]
    assert answer_changes(one_round, EQ) is None


TRAIN = [
    # consensus 3 is wrong: D_G = a1 (a0 was 2); D_C- = a0 (2 -> 3, the debate made it follow the wrong
    # consensus); D_C+ = a1; a2 ended on 2, in no critic pool
    record("train-a", "2", [["2", "3", "4"], ["3", "3", "2"]], "3"),
    # consensus 5 is right: D_G = a0 a2; D_C- = a1; D_C+ = a0 a2
    record("train-b", "5", [["5", "6", "5"], ["5", "5", "5"]], "5"),
    record("train-c", "9", [[None, None, None], [None, None, None]], None),  # no consensus: no pool
]


def test_target_precision_is_the_share_of_each_pool_whose_consensus_is_gold() -> None:
    pools = target_precision(TRAIN, EQ)
    got = {name: (p.size, p.right) for name, p in pools.items()}
    assert got == {"consensus": (2, 1), "D_G": (3, 2), "D_C-": (2, 1), "D_C+": (3, 2)}
    assert pools["D_G"].precision == pytest.approx(2 / 3)
    one_round = target_precision([record("train-d", "2", [["2", "1", "2"]], "2")], EQ)
    assert set(one_round) == {"consensus", "D_G"} and one_round["D_G"].precision == 1.0
    assert math.isnan(target_precision([], EQ)["consensus"].precision)


def _section(md: str, run_label: str) -> list[list[str]]:
    section = md.split("## Debate dynamics and training targets", 1)[1].split("\n## ", 1)[0]
    table = section.split(f"### {run_label}\n", 1)[1].strip().split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]


def test_report_shows_each_iterations_changes_and_target_precision(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    ours = root / "ours"
    append_jsonl(ours / "iter_0/eval/debate.jsonl", TEST)
    append_jsonl(ours / "iter_1/eval/debate.jsonl", TEST[:1])
    append_jsonl(ours / "iter_1/debate.jsonl", TRAIN)
    write_report(root)
    md = (root / "report.md").read_text()
    rows = _section(md, "Ours")
    assert rows == [
        ["0 (base)", "20% of 5", "50% of 4", "n/a", "n/a", "n/a", "n/a"],
        ["1", "50% of 2", "0% of 1", "50% of 2", "67% of 3", "50% of 2", "67% of 3"],
    ]
    assert "### Single-agent FT" not in md.split("## Debate dynamics", 1)[1].split("\n## ", 1)[0]
    assert (root / "plots/dynamics.png").read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"!\[answers turned right -> wrong[^\]]*\]\(plots/dynamics.png\)", md)


def test_no_debate_files_no_section(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    write_report(root)
    assert "Debate dynamics" not in (root / "report.md").read_text()
    assert not (root / "plots/dynamics.png").exists()


def test_outcomes_give_the_same_changes_as_the_debate_they_were_written_from() -> None:
    from mft.eval.dynamics import answer_changes_of_outcomes
    from mft.eval.outcomes import outcomes_of

    lines = outcomes_of(TEST, get_task("arithmetic"))
    assert answer_changes_of_outcomes(lines, EQ) == answer_changes(TEST, EQ)
    assert answer_changes_of_outcomes([{**lines[0], "answers": None}, *lines[1:]], EQ) is None  # not kept
    one_round = outcomes_of([record("test-d", "2", [["2", "1", "2"]], "2")], get_task("arithmetic"))
    assert answer_changes_of_outcomes(one_round, EQ) is None


def test_a_results_directory_with_outcomes_only_shows_the_test_changes(tmp_path: Path) -> None:
    """What `mft report` reads from a committed results directory: the outcomes, no debate files."""
    from mft.eval.outcomes import outcomes_of, write_outcomes

    root = copy_fixture(tmp_path, "arithmetic")
    ours = root / "ours"
    write_outcomes(ours / "iter_0/eval/outcomes.jsonl.gz", outcomes_of(TEST, get_task("arithmetic")))
    append_jsonl(ours / "iter_1/eval/debate.jsonl", TEST[:1])  # a debate file wins over outcomes
    write_outcomes(ours / "iter_1/eval/outcomes.jsonl.gz", outcomes_of(TEST, get_task("arithmetic")))
    write_report(root)
    rows = _section((root / "report.md").read_text(), "Ours")
    assert rows == [
        ["0 (base)", "20% of 5", "50% of 4"],
        ["1", "50% of 2", "0% of 1"],
    ]  # no training debate kept: no train columns
