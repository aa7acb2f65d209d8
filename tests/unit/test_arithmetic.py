from __future__ import annotations

import pytest

from mft.errors import MftError
from mft.tasks import get_task
from mft.tasks.arithmetic import evaluate
from mft.tasks.base import pool_of

task = get_task("arithmetic")

EXTRACT_CASES = {
    "toy format": ("12*7=84\n5*20=100\n3+84=87\n87+15=102\n102-100=2\nThe answer is 2.", "2"),
    "negative": ("... so the answer is -638.", "-638"),
    "last 'answer is' wins": ("The answer is 5. Wait, the answer is 7.", "7"),
    "boxed": ("so we get \\boxed{41}", "41"),
    "answer is boxed": ("The answer is \\boxed{-3}.", "-3"),
    "thousands comma": ("The answer is 1,024.", "1024"),
    "answer is with colon": ("Answer is: 12", "12"),
    "fallback last integer": ("3+4 gives 7", "7"),
    "no number": ("I am not sure.", None),
    "empty": ("", None),
}


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_extract(name: str) -> None:
    text, expected = EXTRACT_CASES[name]
    assert task.extract_answer(text) == expected


EQUIV_CASES = {
    "same": ("5", "5", True),
    "leading zero": ("05", "5", True),
    "spaces": (" 7 ", "7", True),
    "comma": ("1,000", "1000", True),
    "different": ("5", "6", False),
    "sign": ("-5", "5", False),
    "missing left": (None, "5", False),
    "missing both": (None, None, False),
    "not a number": ("five", "5", False),
}


@pytest.mark.parametrize("name", list(EQUIV_CASES))
def test_equivalence(name: str) -> None:
    a, b, expected = EQUIV_CASES[name]
    assert task.is_equivalent(a, b) is expected


def test_missing_answer_scores_wrong() -> None:
    assert task.score("no idea", "0") is False


def test_splits_are_disjoint_seeded_and_correct() -> None:
    train = task.load("train", 500, seed=0)
    test = task.load("test", 500, seed=0)
    assert len(train) == len({p.id for p in train}) == 500
    assert not {p.question for p in train} & {p.question for p in test}
    assert [p.id for p in task.load("test", 500, seed=0)] == [p.id for p in test]
    assert [p.id for p in task.load("test", 500, seed=1)] != [p.id for p in test]
    # a smaller test split is a prefix of the larger one, whatever the train size
    assert [p.id for p in task.load("test", 50, seed=0)] == [p.id for p in test[:50]]
    for p in test[:50]:
        ops = tuple(p.meta["ops"])
        assert all(0 <= x <= 29 for x in ops)  # Du et al.'s randint(0, 30)
        assert p.answer == str(evaluate(ops))
        assert pool_of(str(ops), 0) == "test"


def test_splits_are_unchanged() -> None:
    # the first problems of each pool at seed 0 (task version 2: operands 0..29)
    assert [p.id for p in task.load("test", 4, seed=0)] == [
        "test-11-7-9-0-23-25",
        "test-23-12-26-23-6-17",
        "test-3-20-8-12-3-23",
        "test-17-10-17-2-8-7",
    ]
    assert [p.id for p in task.load("train", 4, seed=0)] == [
        "train-25-1-25-28-6-13",
        "train-21-22-17-28-20-18",
        "train-22-27-8-11-8-15",
        "train-24-8-19-15-15-23",
    ]


def test_prompt_is_the_papers() -> None:
    p = task.load("test", 1)[0]
    prompt = task.question_prompt(p)
    assert prompt.startswith(f"What is the result of {p.question}?")
    assert "state your answer at the end" in prompt


def test_bad_split() -> None:
    with pytest.raises(MftError):
        task.load("validation", 3)
