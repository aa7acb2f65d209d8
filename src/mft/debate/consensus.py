"""Majority vote over extracted answers, with equivalence-aware grouping and a seeded tie rule.

Steps (named, lm-eval style): extract (the task's `extract_answer`) -> group (answers the task calls
equivalent form one group, represented by its first member) -> vote (largest group wins).

Tie rule: when several groups share the top count, one is drawn with `random.Random(key)` where the key is
built from the run seed, the problem id and the round, so the same run always breaks the same tie the same
way, while ties are not systematically resolved towards agent 0. Missing answers (None) never vote; if
nobody answered, the consensus is None (and counts as wrong).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence


def group_answers(
    answers: Sequence[str | None], equivalent: Callable[[str | None, str | None], bool]
) -> list[tuple[str, list[int]]]:
    """Groups of equivalent answers as (representative, member indices), in order of first appearance."""
    groups: list[tuple[str, list[int]]] = []
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        for rep, members in groups:
            if equivalent(rep, ans):
                members.append(i)
                break
        else:
            groups.append((ans, [i]))
    return groups


def majority_vote(
    answers: Sequence[str | None],
    equivalent: Callable[[str | None, str | None], bool],
    tie_key: str = "",
) -> str | None:
    groups = group_answers(answers, equivalent)
    if not groups:
        return None
    top = max(len(m) for _, m in groups)
    tied = [rep for rep, members in groups if len(members) == top]
    if len(tied) == 1:
        return tied[0]
    return random.Random(f"tie:{tie_key}").choice(tied)


def majority_share(
    answers: Sequence[str | None], equivalent: Callable[[str | None, str | None], bool]
) -> float:
    """Fraction of agents whose answer is in the largest group (1.0 = unanimous; missing answers disagree).

    One problem's answers, grouped as `majority_vote` groups them. Not the diversity metric `agreement`
    (`mft.eval.diversity.pairwise_agreement`: the fraction of agreeing agent *pairs*).
    """
    if not answers:
        return 0.0
    groups = group_answers(answers, equivalent)
    return max((len(m) for _, m in groups), default=0) / len(answers)
