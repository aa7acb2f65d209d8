"""Chat template options (`HFBackend(chat_template_kwargs=...)`), on Qwen3's `enable_thinking`.

With `enable_thinking: false` Qwen3's template opens every reply with an empty think block in the prompt;
generation, scoring and the rendered prompt must all use the option, not only one of them.
"""

from __future__ import annotations

import pytest

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf import HFBackend
from mft.records import Message
from mft.tasks import get_task
from tests.architectures.tiny import REPLY, TinyModels

pytestmark = pytest.mark.architectures

task = get_task("arithmetic")
NO_THINKING = {"enable_thinking": False}
EMPTY_THINK = "<think>\n\n</think>\n\n"


def _question() -> list[Message]:
    return [Message(role="user", content=task.question_prompt(task.load("test", 1)[0]))]


def test_prompt_uses_the_template_options(tiny_models: TinyModels) -> None:
    model = str(tiny_models.base("qwen3"))
    request = GenerationRequest("a", _question())
    plain = HFBackend(model).render(request)
    no_thinking = HFBackend(model, chat_template_kwargs=NO_THINKING).render(request)
    assert plain.endswith("<|im_start|>assistant\n")
    assert no_thinking == plain + EMPTY_THINK


def test_scored_reply_follows_the_options(tiny_models: TinyModels) -> None:
    """The think block is in the prompt then, so the scored reply is the reply alone and its stop token."""
    backend = HFBackend(str(tiny_models.base("qwen3")), chat_template_kwargs=NO_THINKING)
    backend.add_agent(Agent("a"))
    [(ids, _)] = backend.score_responses("a", [_question()], ["hello"])
    tok = backend.tokenizer
    assert tok.decode(ids[:-1].tolist()) == "hello"
    assert int(ids[-1]) == tok.convert_tokens_to_ids("<|im_end|>")


def test_generation_with_the_options(tiny_models: TinyModels) -> None:
    """The taught model (taught with and without the option) answers the same either way."""
    for kwargs in (None, NO_THINKING):
        backend = HFBackend(str(tiny_models.taught("qwen3")), chat_template_kwargs=kwargs)
        backend.add_agent(Agent("a"))
        out = backend.generate(
            [GenerationRequest("a", _question())], Sampling(temperature=0, max_new_tokens=24)
        )
        assert out == [REPLY], kwargs
