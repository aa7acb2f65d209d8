"""Llama 3.2's template prints today's date into every prompt ("Today Date: 03 Mar 2031"). A run's prompts
must not depend on the day: a run resumed tomorrow, or repeated to check determinism, would otherwise
debate (and train on) different prompts. The clock is moved by patching what the template's
`strftime_now` reads, so the test does not depend on when it runs.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest

from mft.backends.base import GenerationRequest
from mft.backends.chat import ChatFormat
from mft.records import Message
from mft.tasks import get_task
from tests.architectures.tiny import TinyModels

pytestmark = pytest.mark.architectures

task = get_task("arithmetic")
DAYS = (datetime.datetime(2031, 3, 3, 9, 0), datetime.datetime(2033, 10, 17, 23, 59))


def _clock_at(monkeypatch: pytest.MonkeyPatch, day: datetime.datetime) -> None:
    """Make transformers' chat-template `strftime_now` see `day` as now (it calls `datetime.now()` of its
    module at render time, so this works even for an already compiled template)."""
    import transformers.utils.chat_template_utils as ctu

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:  # noqa: ARG003 - the signature of datetime.now
            return cls.fromtimestamp(day.timestamp())

    monkeypatch.setattr(ctu, "datetime", Frozen)


def _messages() -> list[Message]:
    p = task.load("test", 1)[0]
    return [
        Message(role="user", content=task.question_prompt(p)),
        Message(role="assistant", content="The answer is 7."),
        Message(role="user", content=task.debate_prompt(p, ["The answer is 7."])),
    ]


def _on_each_day(monkeypatch: pytest.MonkeyPatch, render: Callable[[], Any]) -> list[Any]:
    out = []
    for day in DAYS:
        _clock_at(monkeypatch, day)
        out.append(render())
    return out


def _shown(day: datetime.datetime) -> str:
    return day.strftime("%d %b %Y")


def test_the_clock_patch_reaches_the_template(
    tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pinning, the template does print the patched day (so the tests below can fail)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models.base("llama3")))
    dumped = [m.model_dump() for m in _messages()]
    prompts = _on_each_day(
        monkeypatch, lambda: tok.apply_chat_template(dumped, tokenize=False, add_generation_prompt=True)
    )
    assert [f"Today Date: {_shown(d)}" in p for p, d in zip(prompts, DAYS, strict=True)] == [True, True]


def test_chat_format_prompt_is_the_same_whatever_the_day(
    tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    model = tiny_models.base("llama3")
    chat = ChatFormat(AutoTokenizer.from_pretrained(str(model)), GenerationConfig.from_pretrained(str(model)))
    prompts = _on_each_day(monkeypatch, lambda: chat.prompt(_messages()))
    assert prompts[0] == prompts[1]
    assert "Today Date: " in prompts[0]  # still the model's template, with a date in it
    for day in DAYS:
        assert _shown(day) not in prompts[0]
    training = _on_each_day(monkeypatch, lambda: chat.training_ids(_messages()))
    assert training[0] == training[1]


def test_backend_prompts_are_the_same_whatever_the_day(
    tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the hf backend generates from (`render`) and scores are pinned too, not only ChatFormat."""
    from mft.backends.hf import HFBackend

    backend = HFBackend(str(tiny_models.base("llama3")))
    request = GenerationRequest("a", _messages())
    prompts = _on_each_day(monkeypatch, lambda: backend.render(request))
    assert prompts[0] == prompts[1]
    assert not any(_shown(day) in prompts[0] for day in DAYS)
    assert prompts[0] == backend.chat.prompt(_messages())


def test_pinned_prompt_does_not_depend_on_the_real_clock(
    tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today (unpatched) gives the same prompt as the patched days: it is pinned, not just stable."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models.base("llama3")))
    today = ChatFormat(tok).prompt(_messages())
    assert _on_each_day(monkeypatch, lambda: ChatFormat(tok).prompt(_messages())) == [today, today]


def test_a_family_without_a_date_is_unchanged(tiny_models: TinyModels) -> None:
    """Pinning touches only templates that print a date: another family's prompt is its template's."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models.base("qwen2_5")))
    dumped = [m.model_dump() for m in _messages()]
    assert ChatFormat(tok).prompt(_messages()) == tok.apply_chat_template(
        dumped, tokenize=False, add_generation_prompt=True
    )
