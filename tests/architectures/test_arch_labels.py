"""Training labels of a critic's 3-round conversation, token by token, for every family's template.

A critic trains on its whole debate: question, answer, "These are the recent/updated opinions..." prompt,
answer, another prompt, answer. Only the assistant turns may carry labels: each answer's tokens and the
end-of-turn token that closes it, never a user turn, a role header or the next turn's marker. Where TRL
ships a training version of the family's template, the labels must be exactly what TRL's SFT would train
on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mft.backends.chat import ChatFormat
from mft.records import Message
from mft.tasks import get_task
from tests.architectures.tiny import SPECS, Family

pytestmark = pytest.mark.architectures

task = get_task("arithmetic")


def critic_conversation() -> list[Message]:
    """Built as the debate engine builds agent 0's conversation in a 3-agent, 3-round debate."""
    p = task.load("train", 1)[0]
    a, b, c, d, e, f = p.meta["ops"]
    answers = [
        f"{b}*{c}={b * c}\n{e}*{f}={e * f}\nThe answer is {p.answer}.",
        f"I agree with the other agents.\nThe answer is {p.answer}.",
        "The answer is 12.",
    ]
    others = [["The answer is 12.", "The answer is 3."], ["The answer is 12.", f"The answer is {p.answer}."]]
    messages = [Message(role="user", content=task.question_prompt(p))]
    for r, answer in enumerate(answers):
        if r > 0:
            messages.append(Message(role="user", content=task.debate_prompt(p, others[r - 1])))
        messages.append(Message(role="assistant", content=answer))
    return messages


def _load(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, GenerationConfig

    return AutoTokenizer.from_pretrained(str(model_dir)), GenerationConfig.from_pretrained(str(model_dir))


def _spans(labels: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of labelled positions, as [start, end)."""
    spans: list[tuple[int, int]] = []
    for i, lab in enumerate(labels):
        if lab == -100:
            continue
        if spans and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def _expected_span(spec: Family, content: str, last: bool) -> re.Pattern[str]:
    """What one labelled span may decode to: the answer (trimmed where the template trims it) and the
    end-of-turn token, with only whitespace around it, and the markers a training template legitimately
    puts inside an assistant turn (Qwen3's empty think block; the eos Phi-3's template ends a chat with)."""
    body = content.strip() if spec.template_strips else content
    prefix = f"(?:{re.escape(spec.label_prefix)})?" if spec.label_prefix else ""
    suffix = f"(?:{re.escape(spec.label_suffix)})?" if spec.label_suffix and last else ""
    return re.compile(rf"\s*{prefix}{re.escape(body)}{re.escape(spec.end_of_turn)}\s*{suffix}\s*", re.DOTALL)


def test_labels_cover_exactly_the_assistant_turns(tiny_model: Path, family: str) -> None:
    spec = SPECS[family]
    tok, gen = _load(tiny_model)
    messages = critic_conversation()
    ids, labels = ChatFormat(tok, gen).training_ids(messages)
    assert len(ids) == len(labels)
    assert all(lab in (-100, t) for t, lab in zip(ids, labels, strict=True))  # a label is its own token
    # the ids are the whole conversation: every message is in them, in order
    text = tok.decode(ids)
    at = 0
    for m in messages:
        at = text.index(m.content.strip() if spec.template_strips else m.content, at)
    answers = [m.content for m in messages if m.role == "assistant"]
    spans = _spans(labels)
    decoded = [tok.decode(ids[a:b]) for a, b in spans]
    assert len(spans) == len(answers), decoded
    for k, (span, answer) in enumerate(zip(decoded, answers, strict=True)):
        assert _expected_span(spec, answer, last=k == len(answers) - 1).fullmatch(span), (span, answer)
    # nothing of a user turn: every user message's tokens are outside the spans
    unlabelled = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
    for m in messages:
        if m.role == "user":
            assert m.content in unlabelled


def _trl_training_template(tok: Any) -> str | None:
    """TRL's training template for this tokenizer's template (None where TRL has none; the template
    itself where it already has generation markers)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tok.chat_template):
        template: str = tok.chat_template
        return template
    try:
        return get_training_chat_template(tok)
    except ValueError:  # a template TRL does not know (Llama 3.2's, Mistral's)
        return None


def test_labels_match_trl_where_it_has_a_training_template(tiny_model: Path, family: str) -> None:
    tok, gen = _load(tiny_model)
    template = _trl_training_template(tok)
    if template is None:
        pytest.skip(f"TRL has no training template for {family}'s chat template")
    messages = critic_conversation()
    ids, labels = ChatFormat(tok, gen).training_ids(messages)
    trl = tok.apply_chat_template(
        [m.model_dump() for m in messages],
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    assert ids == list(trl["input_ids"])
    assert [int(lab != -100) for lab in labels] == list(trl["assistant_masks"])


def test_trl_templates_are_known_for_the_families_that_have_them(family: str, tiny_model: Path) -> None:
    """Guards the skip above: the families whose templates TRL ships training versions of really get
    one (were the lookup to fail for all of them, the comparison would silently test nothing)."""
    tok, _ = _load(tiny_model)
    has = _trl_training_template(tok) is not None
    assert has == (family in ("qwen2_5", "qwen3", "phi3", "gemma2"))
