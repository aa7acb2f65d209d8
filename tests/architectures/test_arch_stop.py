"""Generation and scoring end where the family's turn ends.

Each family's instruct model ends a turn with a token listed in `generation_config.eos_token_id`, often not
the tokenizer's eos (Llama 3's <|eot_id|>, Phi-3's <|end|>, Gemma's <end_of_turn>). A model forced to emit
one of them at once must give an empty response costing one token; a backend that stops only on the
tokenizer's eos runs on to max_new_tokens and, where the token is not special, returns it as text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf import HFBackend
from mft.records import Message
from mft.tasks import get_task
from tests.architectures.tiny import FAMILIES, SPECS, TinyModels

pytestmark = pytest.mark.architectures

task = get_task("arithmetic")
MAX_NEW = 20


def _stop_tokens(family: str) -> list[str]:
    """The family's end-of-turn token first, then its other stop tokens (generation_config's and eos)."""
    spec = SPECS[family]
    rest = [t for t in (*spec.generation_eos, spec.eos) if t != spec.end_of_turn]
    return [spec.end_of_turn, *dict.fromkeys(rest)]


STOPS = [pytest.param(f, t, id=f"{f}-{t}") for f in FAMILIES for t in _stop_tokens(f)]


def _backend(model_dir: Path) -> HFBackend:
    backend = HFBackend(str(model_dir), batch_size=8)
    backend.add_agent(Agent("a"))
    return backend


def _question(i: int = 0) -> list[Message]:
    return [Message(role="user", content=task.question_prompt(task.load("test", i + 1)[i]))]


@pytest.mark.parametrize(("family", "token"), STOPS)
def test_generation_stops_at_each_stop_token(tiny_models: TinyModels, family: str, token: str) -> None:
    backend = _backend(tiny_models.forced(family, token))
    out = backend.generate(
        [GenerationRequest("a", _question())], Sampling(temperature=0.0, max_new_tokens=MAX_NEW)
    )
    assert out == [""]
    assert backend.stats.completion_tokens == 1
    assert backend.stats.per_agent_completion_tokens == {"a": 1}


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_ids_are_every_end_of_turn_token(tiny_models: TinyModels, family: str) -> None:
    spec = SPECS[family]
    backend = _backend(tiny_models.base(family))
    tok = backend.tokenizer
    expected = {tok.convert_tokens_to_ids(t) for t in (*spec.generation_eos, spec.eos)}
    assert set(backend.chat.stop_ids) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_that_never_stops_runs_to_the_budget(tiny_models: TinyModels, family: str) -> None:
    """The other side of stopping: a model that never ends its turn gives all max_new_tokens tokens, in
    every row of a batch (rows of different prompt lengths: left padding must not end a row early)."""
    word = "Ġanswer" if SPECS[family].style == "bytelevel" else "▁answer"
    backend = _backend(tiny_models.forced(family, word))
    reqs = [GenerationRequest("a", _question(i)) for i in range(2)]
    reqs.append(GenerationRequest("a", [Message(role="user", content="Hi")]))
    out = backend.generate(reqs, Sampling(temperature=0.0, max_new_tokens=MAX_NEW))
    assert out == [" ".join(["answer"] * MAX_NEW)] * 3
    assert backend.stats.completion_tokens == 3 * MAX_NEW


@pytest.mark.parametrize("family", FAMILIES)
def test_scored_reply_ends_at_the_end_of_turn_token(tiny_models: TinyModels, family: str) -> None:
    """score_responses scores the tokens generation would produce: the reply and its end-of-turn token,
    nothing the template writes after it (Phi-3's eos, Gemma's and Qwen's newline)."""
    spec = SPECS[family]
    backend = _backend(tiny_models.base(family))
    tok = backend.tokenizer
    eot = tok.convert_tokens_to_ids(spec.end_of_turn)
    [(ids, logprobs)] = backend.score_responses("a", [_question()], ["hello"])
    ids = ids.tolist()
    assert ids[-1] == eot
    # before it: the reply, after the empty think block Qwen3's template opens a last reply with (what the
    # model writes itself when it thinks, so part of what generation produces)
    assert tok.decode(ids[:-1]).strip().removeprefix(spec.label_prefix) == "hello"
    stops = {tok.convert_tokens_to_ids(t) for t in (*spec.generation_eos, spec.eos)}
    assert not set(ids[:-1]) & stops
    assert tuple(logprobs.shape) == (len(ids), len(tok))
