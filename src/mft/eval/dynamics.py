"""What the debate does to the agents' answers, and how often the consensus it trains on is right.

Two diagnostics for the report, both reading the gold answers and used for nothing but reporting (no
dataset is built from them; `mft.data.builders` never sees a label):

- `answer_changes`: in a test-split debate, each agent's answer from round 1 to the last round: how many
  right answers the later rounds turned wrong, and how many wrong answers they turned right. A critic that
  corrects shows more of the second; one that follows a wrong majority, more of the first.
  `answer_changes_of_outcomes` counts the same from the evaluation's outcomes.jsonl.gz, which a results
  directory keeps when it drops the debate file.
- `target_precision`: in a training-split debate, the share of each pool the paper's datasets are drawn
  from whose target (the consensus) is the gold answer: the consensus itself, D_G (round-1 answers that agree
  with it), D_C- (first answer differed, final answer agrees) and D_C+ (both agree). The pools are the ones
  `mft.data.builders` draws from (a critic trains on all of D_C- and part of D_C+).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mft.records import DebateRecord

Equivalent = Callable[[str | None, str | None], bool]


@dataclass(frozen=True)
class AnswerChanges:
    """Agent answers of a debate, from round 1 to the last round (counted over problems x agents)."""

    right_first: int  # right in round 1
    wrong_first: int  # wrong (or missing) in round 1
    right_to_wrong: int
    wrong_to_right: int

    @property
    def broken(self) -> float:
        """Share of round-1 right answers the debate turned wrong (NaN when none was right)."""
        return self.right_to_wrong / self.right_first if self.right_first else float("nan")

    @property
    def fixed(self) -> float:
        """Share of round-1 wrong answers the debate turned right (NaN when none was wrong)."""
        return self.wrong_to_right / self.wrong_first if self.wrong_first else float("nan")


def answer_changes(records: Sequence[DebateRecord], equivalent: Equivalent) -> AnswerChanges | None:
    """Round 1 against the last round of each agent; None for one-round debates (nothing can change)."""
    return _changes([(r.answers, r.problem.answer) for r in records], equivalent)


def answer_changes_of_outcomes(
    outcomes: Sequence[Mapping[str, Any]], equivalent: Equivalent
) -> AnswerChanges | None:
    """`answer_changes` from an evaluation's outcome lines (`mft.eval.outcomes`), which keep every agent's
    answer in every round and the gold answer: the same counts where only outcomes.jsonl.gz was kept. None
    when a line lacks them."""
    rows = []
    for o in outcomes:
        answers, gold = o.get("answers"), o.get("gold")
        if not isinstance(answers, list) or not all(isinstance(a, list) for a in answers):
            return None
        rows.append((answers, gold if isinstance(gold, str) else None))
    return _changes(rows, equivalent)


def _changes(
    rows: Sequence[tuple[Sequence[Sequence[str | None]], str | None]], equivalent: Equivalent
) -> AnswerChanges | None:
    """Per problem (answers per round per agent, gold): the counts of `AnswerChanges` over its agents."""
    if not rows or all(len(answers) < 2 for answers, _ in rows):
        return None
    right_first = wrong_first = right_to_wrong = wrong_to_right = 0
    for answers, gold in rows:
        if len(answers) < 2:
            continue
        for first, last in zip(answers[0], answers[-1], strict=True):
            was, now = equivalent(first, gold), equivalent(last, gold)
            right_first += was
            wrong_first += not was
            right_to_wrong += was and not now
            wrong_to_right += now and not was
    return AnswerChanges(right_first, wrong_first, right_to_wrong, wrong_to_right)


@dataclass(frozen=True)
class Pool:
    size: int
    right: int  # members whose target (the consensus) is the gold answer

    @property
    def precision(self) -> float:
        return self.right / self.size if self.size else float("nan")


POOLS = ("consensus", "D_G", "D_C-", "D_C+")


def target_precision(records: Sequence[DebateRecord], equivalent: Equivalent) -> dict[str, Pool]:
    """Per pool (`POOLS`), its size and how many of its targets are right. `consensus` counts problems; the
    others count (problem, agent) pairs, as the builders do. D_C- / D_C+ are absent for one-round debates."""
    counts = {p: [0, 0] for p in POOLS}

    def add(pool: str, right: bool) -> None:
        counts[pool][0] += 1
        counts[pool][1] += right

    for r in records:
        if r.consensus is None:
            continue
        right = equivalent(r.consensus, r.problem.answer)
        add("consensus", right)
        for slot in range(r.n_agents):
            first_agrees = equivalent(r.answers[0][slot], r.consensus)
            if first_agrees:
                add("D_G", right)
            if r.n_rounds >= 2 and equivalent(r.answers[-1][slot], r.consensus):
                add("D_C+" if first_agrees else "D_C-", right)
    rounds = max((r.n_rounds for r in records), default=1)
    return {p: Pool(*counts[p]) for p in POOLS if rounds >= 2 or not p.startswith("D_C")}
