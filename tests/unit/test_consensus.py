from __future__ import annotations

from mft.debate.consensus import group_answers, majority_share, majority_vote
from mft.tasks import get_task

eq = get_task("arithmetic").is_equivalent


def test_majority_wins() -> None:
    assert majority_vote(["3", "4", "3"], eq) == "3"


def test_equivalent_answers_group() -> None:
    assert group_answers(["1,000", "1000", "7"], eq) == [("1,000", [0, 1]), ("7", [2])]
    assert majority_vote(["7", "1,000", "1000"], eq) == "1,000"


def test_missing_answers_never_vote() -> None:
    assert majority_vote([None, None, "5"], eq) == "5"
    assert majority_vote([None, None, None], eq) is None
    assert majority_share([None, None, "5"], eq) == 1 / 3


def test_tie_rule_is_seeded_and_not_always_first() -> None:
    answers = ["1", "2", "3"]
    picks = {majority_vote(answers, eq, tie_key=f"0:p{i}:1") for i in range(60)}
    assert picks == {"1", "2", "3"}  # not biased to the first agent
    for i in range(20):
        key = f"0:p{i}:1"
        assert majority_vote(answers, eq, tie_key=key) == majority_vote(answers, eq, tie_key=key)


def test_tie_only_between_top_groups() -> None:
    for i in range(30):
        assert majority_vote(["1", "2", "2", "1", "3"], eq, tie_key=str(i)) in {"1", "2"}
