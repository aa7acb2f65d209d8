"""The scoring plan: each (model, response) scored once, grouped by model, in blocks bounded by a budget,
reduced to NLLs and KL pairs; and the hf scorer's token-sized batches."""

from __future__ import annotations

import math

import pytest
import torch

from mft.eval.scoring_plan import Request, score_requests
from mft.records import Message


class BernoulliScorer:
    """Vocabulary {0, 1}; a response is a string of '0'/'1', one token each. Model `name` gives token 0
    probability q[name] at every position. Records every call."""

    def __init__(self, q: dict[str, float]) -> None:
        self.q = q
        self.calls: list[tuple[str, list[str]]] = []

    def score_responses(self, agent: str, prompts: list[list[Message]], responses: list[str]):
        self.calls.append((agent, list(responses)))
        out = []
        for text in responses:
            q = torch.full((len(text),), self.q[agent], dtype=torch.float64)
            out.append((torch.tensor([int(c) for c in text]), torch.stack([q, 1 - q], dim=-1).log()))
        return out


def bern_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def requests() -> list[Request]:
    prompt = [Message(role="user", content="q")]
    return [
        Request(prompt, "0011", ("a", "b", "base"), (("a", "b"), ("b", "a"), ("a", "base"))),
        Request(prompt, "1", ("a", "base"), (("a", "base"),)),
        Request(prompt, "000", ("b",)),  # an NLL only: nothing held for it
        Request(prompt * 3, "01", ("base", "a"), (("base", "a"),)),
    ]


def test_each_model_scores_each_response_once_and_the_values_are_exact() -> None:
    scorer = BernoulliScorer({"a": 0.5, "b": 0.8, "base": 0.3})
    got = score_requests(requests(), scorer)
    assert sorted(agent for agent, _ in scorer.calls) == ["a", "b", "base"]  # one block: one call each
    assert sorted(t for _, texts in scorer.calls for t in texts) == sorted(
        ["0011"] * 3 + ["1"] * 2 + ["000"] + ["01"] * 2
    )
    assert got[0].nll["b"] == pytest.approx(-(2 * math.log(0.8) + 2 * math.log(0.2)) / 4)
    assert got[2].nll == {"b": pytest.approx(-math.log(0.8))}
    assert got[0].kl == {
        ("a", "b"): pytest.approx(bern_kl(0.5, 0.8)),
        ("b", "a"): pytest.approx(bern_kl(0.8, 0.5)),
        ("a", "base"): pytest.approx(bern_kl(0.5, 0.3)),
    }
    assert got[1].kl == {("a", "base"): pytest.approx(bern_kl(0.5, 0.3))}
    assert got[3].kl == {("base", "a"): pytest.approx(bern_kl(0.3, 0.5))}
    assert set(got[3].nll) == {"base", "a"}


@pytest.mark.parametrize(("budget", "most"), [(1, None), (10**9, 2), (10**9, None)])
def test_blocks_change_the_calls_not_the_results(budget: int, most: int | None) -> None:
    q = {"a": 0.5, "b": 0.8, "base": 0.3}
    whole = score_requests(requests(), BernoulliScorer(q))
    scorer = BernoulliScorer(q)
    got = score_requests(requests(), scorer, budget=budget, most=most)
    assert got == whole
    per_call = [len(texts) for _, texts in scorer.calls]
    if budget == 1:  # every block one response: one call per (model, response)
        assert per_call == [1] * 8
    if most == 2:
        assert max(per_call) <= 2
    # whatever the blocks, each (model, response) pair once
    assert sum(per_call) == 8


def test_a_block_holds_about_the_budget_once_the_vocabulary_is_known() -> None:
    """After the first block (sized for a large vocabulary), blocks hold about `budget` bytes of log-probs:
    tokens x models x vocabulary x 4 (plus a few tokens of margin a response)."""
    prompt = [Message(role="user", content="q")]
    many = [Request(prompt, "01" * 5, ("a", "b"), (("a", "b"),)) for _ in range(40)]
    scorer = BernoulliScorer({"a": 0.5, "b": 0.8})
    per_response = (10 + 4) * 2 * 2 * 4  # 10 tokens + margin, 2 models, vocabulary 2, float32
    score_requests(many, scorer, budget=5 * per_response)
    sizes = [len(texts) for agent, texts in scorer.calls if agent == "a"]
    assert sizes[1:-1] and all(s == 5 for s in sizes[1:-1]) and sum(sizes) == 40


def test_a_scorer_that_drops_a_response_is_refused() -> None:
    from mft.errors import MftError

    class Short(BernoulliScorer):
        def score_responses(self, agent, prompts, responses):
            return super().score_responses(agent, prompts, responses)[:-1]

    with pytest.raises(MftError, match="results for"):
        score_requests(requests(), Short({"a": 0.5, "b": 0.8, "base": 0.3}))


def test_hf_scoring_batches_are_capped_by_rows_tokens_and_kept_positions() -> None:
    from mft.backends.hf.scoring import plan_score_batches

    widths, replies = [5, 5, 9, 9, 20], [1, 4, 2, 8, 3]
    order = [0, 1, 2, 3, 4]
    assert plan_score_batches(order, widths, replies, 8, None, None) == [order]
    assert plan_score_batches(order, widths, replies, 2, None, None) == [[0, 1], [2, 3], [4]]
    assert plan_score_batches(order, widths, replies, 8, 20, None) == [[0, 1], [2, 3], [4]]  # 3 x 9 > 20
    # kept positions: rows x (longest reply + 1): [0, 1] 2 x 5, then 3 x 5 > 12
    assert plan_score_batches(order, widths, replies, 8, None, 12) == [[0, 1], [2], [3], [4]]
    # one row at least, whatever the caps
    assert plan_score_batches(order, widths, replies, 8, 1, 1) == [[0], [1], [2], [3], [4]]
