"""Likelihood diversity through the hf backend on the bundled model, and the offline sentence encoder."""

from __future__ import annotations

import json
import math
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mft.backends.base import Agent, Sampling
from mft.eval.diversity import compute_diversity, embedding_dissimilarity
from mft.eval.encoders import load_encoder
from mft.eval.likelihood import kl_from_base, pairwise_kl
from mft.records import DebateRecord, Message, Problem
from mft.tasks import get_task
from mft.toy import CHECKPOINT_DIR
from tests.adapters import random_adapter

task = get_task("arithmetic")


@pytest.fixture(scope="module")
def backend():
    from mft.backends.hf import HFBackend

    return HFBackend("bundled", batch_size=3)  # smaller than the example count: several padded batches


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"a": random_adapter(root / "a", 1), "b": random_adapter(root / "b", 2)}


def _examples(n: int) -> tuple[list[list[Message]], list[str]]:
    """Real questions with replies of varied lengths (so rows are padded differently)."""
    prompts, replies = [], []
    for i, p in enumerate(task.load("test", n)):
        prompts.append([Message(role="user", content=task.question_prompt(p))])
        replies.append(
            ["x", f"The answer is {p.answer}.", f"Let me think.\n{p.question}\nThe answer is 7."][i % 3]
        )
    return prompts, replies


def _reference_losses(model, chat, prompts, replies) -> list[float]:
    """transformers' own loss, one unpadded conversation at a time, labels on the assistant tokens."""
    out = []
    for prompt, reply in zip(prompts, replies, strict=True):
        ids, labels = chat.training_ids([*prompt, Message(role="assistant", content=reply)])
        with torch.no_grad():
            out.append(float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss))
    return out


def _nlls(scored) -> list[float]:
    return [float(-lp.gather(-1, ids[:, None]).mean()) for ids, lp in scored]


def test_score_responses_nll_matches_transformers_loss(backend, adapters) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    backend.add_agent(Agent("plain"))
    backend.add_agent(Agent("a", str(adapters["a"])))
    backend.add_agent(Agent("b", str(adapters["b"])))
    prompts, replies = _examples(7)

    scored = backend.score_responses("plain", prompts, replies)
    assert len(scored) == 7
    for (ids, lp), reply in zip(scored, replies, strict=True):
        assert lp.shape == (len(ids), backend.base.config.vocab_size)
        assert backend.tokenizer.decode(ids) == reply + backend.tokenizer.eos_token  # end of turn included
        assert torch.allclose(lp.exp().sum(-1), torch.ones(len(ids)), atol=1e-5)
    fresh = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR).eval()
    assert _nlls(scored) == pytest.approx(_reference_losses(fresh, backend.chat, prompts, replies), abs=1e-4)

    # a LoRA agent is scored through its own adapter: same as a standalone PeftModel of that adapter
    lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR), str(adapters["a"]))
    expected = _reference_losses(lora.eval(), backend.chat, prompts, replies)
    assert _nlls(backend.score_responses("a", prompts, replies)) == pytest.approx(expected, abs=1e-4)
    # and the base agent is unaffected by the adapters loaded meanwhile
    assert _nlls(backend.score_responses("plain", prompts, replies, batch_size=1)) == pytest.approx(
        _nlls(scored), abs=1e-4
    )


def _records(agents: list[str], n: int) -> list[DebateRecord]:
    """Round-1-only records whose responses are whatever text; what matters is the scoring."""
    prompts, replies = _examples(n * len(agents))
    recs = []
    for p in range(n):
        slots = range(p * len(agents), (p + 1) * len(agents))
        recs.append(
            DebateRecord(
                task=task.name,
                task_version=task.version,
                problem=Problem(id=f"p{p}", question="q", answer="1"),
                agents=[agents],
                responses=[[replies[i] for i in slots]],
                answers=[[task.extract_answer(replies[i]) for i in slots]],
                conversations=[[*prompts[i], Message(role="assistant", content=replies[i])] for i in slots],
                consensus=None,
                round_consensus=[None],
                correct=False,
            )
        )
    return recs


def test_kl_between_adapters_is_positive_and_zero_with_itself(backend, adapters) -> None:
    backend.add_agent(Agent("a", str(adapters["a"])))
    backend.add_agent(Agent("b", str(adapters["b"])))
    backend.add_agent(Agent("plain"))
    recs = _records(["a", "b", "plain"], 2)
    res = pairwise_kl(recs, backend)
    off = [res.matrix[i][j] for i in range(3) for j in range(3) if i != j]
    assert all(v > 1e-3 for v in off), res.matrix
    assert res.estimate.mean > 1e-3
    same = pairwise_kl(_records(["a", "a", "a"], 2), backend)
    assert same.estimate.mean == pytest.approx(0.0, abs=1e-6)

    out = compute_diversity(recs, task, scorer=backend, progress=False)
    assert out["kl"]["matrix"] == [pytest.approx(row, abs=1e-6) for row in res.matrix]
    assert len(out["held_out_nll"]["matrix"]) == 3 and out["held_out_nll"]["mean"] > 0


def test_kl_from_base_is_zero_for_the_base_and_positive_for_an_adapter(backend, adapters) -> None:
    backend.add_agent(Agent("a", str(adapters["a"])))
    backend.add_agent(Agent("plain"))
    backend.add_agent(Agent("reference"))  # the base model under another name: scored, not assumed
    res = kl_from_base(_records(["a", "plain"], 2), backend, "reference", chunk_size=3)
    assert res.agents == {"gen_0": "a", "gen_1": "plain"}
    assert res.per_agent["gen_1"].mean == pytest.approx(0.0, abs=1e-6)
    assert res.per_agent["gen_0"].mean > 1e-3


def test_default_encoder_loads_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = load_encoder()
    emb = torch.tensor(
        encoder.encode(
            [
                "The cat sat on the mat.",
                "A cat was sitting on the rug.",
                "Quarterly revenue rose by four percent.",
            ]
        )
    )
    emb = torch.nn.functional.normalize(emb, dim=-1)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2

    def rec(texts: list[str]) -> DebateRecord:
        return DebateRecord(
            task="t", task_version="1", problem=Problem(id="p", question="q", answer="1"),
            agents=[["x", "y"]], responses=[texts], answers=[[None, None]],
            conversations=[[], []], consensus=None, round_consensus=[None], correct=False,
        )  # fmt: skip

    close = embedding_dissimilarity([rec(["The answer is 12.", "So the answer is 12."])], encoder).mean
    far = embedding_dissimilarity([rec(["The answer is 12.", "I like sailing in summer."])], encoder).mean
    assert 0 <= close < far


# -- the planned computation against the reference, on a real debate ---------------------------------------
class CharEncoder:
    """A cheap deterministic encoder (character counts): embedding dissimilarity without a model download."""

    def encode(self, sentences: list[str]) -> np.ndarray:
        out = np.zeros((len(sentences), 64))
        for row, s in enumerate(sentences):
            for c in s:
                out[row, ord(c) % 64] += 1
        return out


class CountingScorer:
    """The backend as a scorer, counting how often each (model, prompt, response) is scored."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.scored: Counter[tuple[str, str, str]] = Counter()

    def score_responses(self, agent, prompts, responses):
        for p, r in zip(prompts, responses, strict=True):
            self.scored[(agent, json.dumps([m.model_dump() for m in p]), r)] += 1
        return self.backend.score_responses(agent, prompts, responses)


def differences(a, b, where: str = "") -> list[str]:
    """Where two diversity dicts differ: numbers beyond rel 1e-4 / abs 1e-6, anything else at all."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} != {len(b)} entries"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) else [f"{where}: {a!r} != {b!r}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
def debate(backend, adapters, tmp_path_factory) -> list[DebateRecord]:
    """A seeded 2-round debate of 3 slots on the bundled model: generators a, b and a copy of the base,
    critics c, b (gen_1's own model again) and the base copy; adapters that make them differ."""
    from mft.debate.engine import DebateSettings, Society, run_debate

    c = random_adapter(tmp_path_factory.mktemp("adapters") / "c", 3)
    for agent in [Agent("a", str(adapters["a"])), Agent("b", str(adapters["b"])), Agent("c", str(c))]:
        backend.add_agent(agent)
    backend.add_agent(Agent("plain"))
    backend.add_agent(Agent("base_model"))
    society = Society(
        generators=[Agent("a", str(adapters["a"])), Agent("b", str(adapters["b"])), Agent("plain")],
        critics=[Agent("c", str(c)), Agent("b", str(adapters["b"])), Agent("plain")],
    )
    settings = DebateSettings(rounds=2, sampling=Sampling(max_new_tokens=40), seed=0, chunk_size=8)
    return run_debate(backend, task, task.load("test", 8), society, settings, progress=False)


def test_planned_diversity_equals_the_reference_scoring_each_pair_once(backend, debate, monkeypatch) -> None:
    """Every metric of diversity.json from the planned, batched scoring equals the simple reference (one
    response per call: one per forward, unpadded) to float tolerance; each (model, response) pair is
    scored once, where the reference scores some several times."""
    options = dict(encoder=CharEncoder(), base="base_model", same_as_base=["plain"], progress=False)
    reference = compute_diversity(debate, task, scorer=backend, reference=True, chunk_size=1, **options)
    assert {"consensus", "agreement", "embedding_dissimilarity", "held_out_nll", "kl", "kl_from_base"} <= set(
        reference
    )
    assert set(reference["kl_from_base"]["per_agent"]) == {
        f"{r}_{s}" for r in ("gen", "critic") for s in range(3)
    }
    assert reference["kl_from_base"]["per_agent"]["gen_0"]["mean"] > 1e-3  # the agents differ from the base
    assert reference["kl"]["matrix"][0][1] > 1e-3

    counting = CountingScorer(backend)
    planned = compute_diversity(debate, task, scorer=counting, **options)
    assert differences(planned, reference) == []
    # final round: 8 problems x 3 responses under c, b and the base (the held-out NLL, the critics' KL and
    # c's and b's KL from the base share them); round 1: a's and b's responses under themselves and the base
    assert max(counting.scored.values()) == 1
    assert sum(counting.scored.values()) == 8 * 3 * 3 + 8 * 2 * 2
    assert {m for m, _, _ in counting.scored} == {"a", "b", "c", "base_model"}

    # one response per block, one row per forward: still the same numbers
    monkeypatch.setattr(backend, "score_tokens", 1)
    small = compute_diversity(debate, task, scorer=backend, logprob_budget=1, **options)
    assert differences(small, reference) == []
