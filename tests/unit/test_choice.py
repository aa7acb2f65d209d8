"""Multiple-choice answers as models write them (`mft.tasks.choice`)."""

from __future__ import annotations

import pytest

from mft.tasks.base import BadGold
from mft.tasks.choice import ChoiceAnswers

READ = ChoiceAnswers("ABCD")
CHOICES = ["Berlin", "Paris", "Rome", "Madrid"]


@pytest.mark.parametrize(
    "response,letter",
    [
        ("The capital of France is Paris. (B)", "B"),
        ("B)", "B"),
        ("Answer: B", "B"),
        ("**B**", "B"),
        ("the answer is b", "B"),
        ("the answer is b.", "B"),
        ("B. Paris", "B"),
        ("Paris", "B"),  # the choice's text alone
        ("The answer is Paris.", "B"),
        ("B) Paris. A and C are rivers' cities, D is in Spain.", "B"),  # explanation names other letters
        ("I first thought (A), but on reflection the answer is (B).", "B"),  # the last commitment wins
        ("(A) looks tempting.\nFinal answer: (C)", "C"),
        ("\\boxed{D}", "D"),
        ("The answer is (B), because (A) is in Germany.", "B"),
        ("Between the options, (A) is wrong.\nSo I pick (D).", "D"),
        ("The answer is D because Madrid...", "D"),
        ("Option B is correct.", "B"),
        ("Paris is the capital.\nI choose B", "B"),
    ],
)
def test_what_models_write(response: str, letter: str) -> None:
    assert READ.extract(response, CHOICES) == letter


@pytest.mark.parametrize(
    "response",
    [
        "The answer is (A) or (C).",  # two different final letters: ambiguous
        "It could be (A) or (B).",
        "I am not sure.",  # nothing found
        "the answer is a number",  # 'a' here is a word
        "",
        "The answer is (E).",  # not one of the letters
        "A and C are both wrong.",  # the last line names two letters
    ],
)
def test_no_answer_or_an_ambiguous_one_is_none(response: str) -> None:
    assert READ.extract(response, CHOICES) is None


def test_gold_as_a_letter_or_an_index() -> None:
    assert [READ.parse_gold(v) for v in ("B", "(c)", " a ", 3, "0")] == ["B", "C", "A", "D", "A"]
    with pytest.raises(BadGold):
        READ.parse_gold(4)
    with pytest.raises(BadGold):
        READ.parse_gold("C", n_choices=2)  # the row lists two choices
    with pytest.raises(BadGold):
        READ.parse_gold(True)


def test_du_et_al_listing() -> None:
    assert (
        READ.render("Capital of France?", CHOICES)
        == "Capital of France?: A) Berlin, B) Paris, C) Rome, D) Madrid"
    )


def test_the_last_clause_decides_within_a_line() -> None:
    assert READ.extract("(A) is wrong and (C) is right, so (C)") == "C"
    assert READ.extract("(A) is wrong; (C) is right") == "C"
    assert READ.extract("Maybe (A) or (C)") is None
