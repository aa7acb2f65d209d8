"""The chat format: stop ids, assistant-only labels under templates that are not prefix-preserving, template
options and the pinned date. On the bundled tokenizer with templates shaped like real models' ones."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from mft.backends.chat import PINNED_DATE, ChatFormat, stop_ids
from mft.errors import MftError
from mft.records import Message
from mft.toy import CHECKPOINT_DIR

# Phi-3's template, on the bundled tokenizer's role tokens: without a generation prompt it ends the chat with
# eos, so "the chat up to this turn" and "the whole chat" disagree right after the turn's `<|end|>`.
PHI3_LIKE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# Like Qwen3: an earlier assistant turn is rendered without its content once a later turn exists.
REWRITES_HISTORY = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' and not loop.last %}...{% else %}{{ message['content'] }}"
    "{% endif %}"
    "{{ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
DATED = "{{ 'Today: ' + strftime_now('%d %b %Y') }}{% for m in messages %}{{ m['content'] }}{% endfor %}"

CHAT = [
    Message(role="user", content="What is 1+1?"),
    Message(role="assistant", content="The answer is 2."),
    Message(role="user", content="Others say 3. Sure?"),
    Message(role="assistant", content="Yes, the answer is 2."),
    Message(role="user", content="Final?"),
    Message(role="assistant", content="2."),
]


@pytest.fixture(scope="module")
def toy_tok() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(CHECKPOINT_DIR)


def _with_template(tok: Any, template: str) -> Any:
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def _spans(ids: list[int], labels: list[int]) -> list[list[int]]:
    spans: list[list[int]] = []
    for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
        if lab == -100:
            continue
        assert lab == t
        if i and labels[i - 1] != -100:
            spans[-1].append(t)
        else:
            spans.append([t])
    return spans


def test_stop_ids_are_every_eos_of_the_generation_config_and_the_tokenizer(toy_tok: Any) -> None:
    assert stop_ids(toy_tok) == (toy_tok.eos_token_id,)
    assert stop_ids(toy_tok, SimpleNamespace(eos_token_id=[7, 5])) == tuple(
        sorted({5, 7, toy_tok.eos_token_id})
    )
    assert stop_ids(toy_tok, SimpleNamespace(eos_token_id=9)) == tuple(sorted({9, toy_tok.eos_token_id}))


def test_until_stop_cuts_at_the_first_stop_id(toy_tok: Any) -> None:
    chat = ChatFormat(toy_tok, SimpleNamespace(eos_token_id=[40, 41]))
    assert chat.until_stop([5, 6, 41, 40, 0]) == ([5, 6], True)
    assert chat.until_stop([5, 6, 7]) == ([5, 6, 7], False)


def test_generation_tags_give_the_labels(toy_tok: Any) -> None:
    chat = ChatFormat(toy_tok)
    assert chat.training_template() == toy_tok.chat_template  # the bundled template is tagged
    ids, labels = chat.training_ids(CHAT)
    decoded = [toy_tok.decode(s) for s in _spans(ids, labels)]
    assert decoded == [m.content + "<|end|>" for m in CHAT if m.role == "assistant"]


def test_labels_stop_at_the_end_of_each_turn_when_the_template_ends_chats_with_eos(toy_tok: Any) -> None:
    tok = _with_template(toy_tok, PHI3_LIKE)
    chat = ChatFormat(tok)
    assert chat.training_template() is None  # untagged and unknown to TRL: the prefix check is used
    ids, labels = chat.training_ids(CHAT)
    decoded = [tok.decode(s) for s in _spans(ids, labels)]
    # the turn's own `<|end|>` is trained on, never the next turn's `<|user|>` (the old difference of two
    # renderings labelled the position of the lone chat's final eos, which is `<|user|>` in the whole chat)
    assert decoded == [m.content + "<|end|>" for m in CHAT if m.role == "assistant"]
    assert all("<|user|>" not in d for d in decoded)


def test_a_template_that_rewrites_earlier_turns_is_refused_not_mislabelled(toy_tok: Any) -> None:
    chat = ChatFormat(_with_template(toy_tok, REWRITES_HISTORY))
    with pytest.raises(MftError, match="renders earlier turns differently"):
        chat.training_ids(CHAT)
    assert ChatFormat(_with_template(toy_tok, REWRITES_HISTORY)).training_ids(CHAT[:2])  # one turn is fine


def test_a_template_that_prints_the_date_gets_a_pinned_one(toy_tok: Any) -> None:
    dated = _with_template(toy_tok, DATED)
    assert ChatFormat(dated).prompt(CHAT[:1]).startswith(f"Today: {PINNED_DATE.strftime('%d %b %Y')}")
    iso = _with_template(toy_tok, DATED.replace("%d %b %Y", "%Y-%m-%d"))
    assert ChatFormat(iso).prompt(CHAT[:1]).startswith(f"Today: {PINNED_DATE.isoformat()}")
    # Llama 3.x reads `date_string` first: a user's own date wins there
    llama = _with_template(
        toy_tok,
        "{% if not date_string is defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
        "{{ 'Today: ' + date_string }}",
    )
    assert ChatFormat(llama).prompt(CHAT[:1]) == f"Today: {PINNED_DATE.strftime('%d %b %Y')}"
    assert (
        ChatFormat(llama, template_kwargs={"date_string": "1 Jan 2030"}).prompt(CHAT[:1])
        == "Today: 1 Jan 2030"
    )


def test_template_options_reach_every_rendering(toy_tok: Any) -> None:
    tok = _with_template(
        toy_tok,
        "{% if enable_thinking is defined and not enable_thinking %}NO-THINK {% endif %}"
        + toy_tok.chat_template,
    )
    chat = ChatFormat(tok, template_kwargs={"enable_thinking": False})
    assert chat.prompt(CHAT[:1]).startswith("NO-THINK")
    ids, _ = chat.training_ids(CHAT[:2])
    assert tok.decode(ids).startswith("NO-THINK")
    assert not ChatFormat(tok).prompt(CHAT[:1]).startswith("NO-THINK")


def test_reply_ids_end_at_the_stop_token(toy_tok: Any) -> None:
    tok = _with_template(toy_tok, PHI3_LIKE)
    chat = ChatFormat(tok)
    ids, n = chat.reply_ids(CHAT[:1], "The answer is 2.")
    assert tok.decode(ids[-n:]) == "The answer is 2.<|end|>"  # not the "\n" + eos the template adds after it
    assert ids[:-n] == chat.prompt_ids(CHAT[:1])


@pytest.mark.parametrize("template", [None, PHI3_LIKE], ids=["generation tags", "prefix check"])
def test_a_turn_of_weight_0_is_context_not_trained_on(toy_tok: Any, template: str | None) -> None:
    tok = toy_tok if template is None else _with_template(toy_tok, template)
    chat = ChatFormat(tok)
    masked = [m.model_copy(update={"weight": 0}) if i == 1 else m for i, m in enumerate(CHAT)]
    ids, labels = chat.training_ids(masked)
    assert ids == chat.training_ids(CHAT)[0]  # the same chat, fewer labels
    decoded = [tok.decode(s) for s in _spans(ids, labels)]
    assert decoded == [m.content + "<|end|>" for m in CHAT[2:] if m.role == "assistant"]
