"""The tiny models themselves: each is what its family's real model looks like to mft (architecture,
special tokens, chat template, stop tokens), it loads and generates in the hf backend, and the derived
models (`force_token`, `teach_constant_reply`) do what the other tests rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.records import Message
from mft.tasks import get_task
from tests.architectures.tiny import (
    AFTER_TURN,
    REPLY,
    SPECS,
    TinyModels,
    build_tiny,
    chat_template_text,
    greedy_margin,
    suite_chats,
)

pytestmark = pytest.mark.architectures

task = get_task("arithmetic")


def _tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def test_family_looks_like_its_real_model(tiny_model: Path, family: str) -> None:
    from transformers import AutoConfig, GenerationConfig

    spec = SPECS[family]
    tok = _tokenizer(tiny_model)
    config = AutoConfig.from_pretrained(str(tiny_model))
    gen = GenerationConfig.from_pretrained(str(tiny_model))
    assert config.model_type == spec.model_type
    assert config.vocab_size == len(tok)
    # every marker of the template is one token, special unless the real model's is not (Qwen3's <think>)
    for s in (*spec.first, *spec.last):
        ids = tok.encode(s.content, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == s.content, s
        assert tok.added_tokens_decoder[ids[0]].special == s.special, s
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        spec.bos,
        spec.eos,
        spec.pad,
        spec.unk,
    )
    eos = [tok.convert_tokens_to_ids(t) for t in spec.generation_eos]
    assert gen.eos_token_id == (eos if len(eos) > 1 else eos[0])
    assert tok.padding_side == "left"
    assert tok.chat_template == chat_template_text(spec)
    # encoding with special tokens adds bos exactly where the real tokenizer does
    with_specials = tok.encode("The answer is 7.")
    assert (with_specials[0] == tok.bos_token_id) == spec.add_bos
    assert tok.decode(tok.encode(REPLY, add_special_tokens=False)) == REPLY


def test_template_renders_a_debate_and_ends_turns_with_the_stop_token(tiny_model: Path, family: str) -> None:
    spec = SPECS[family]
    tok = _tokenizer(tiny_model)
    p = task.load("train", 1)[0]
    chat = [
        {"role": "user", "content": task.question_prompt(p)},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": task.debate_prompt(p, [REPLY])},
    ]
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert task.question_prompt(p) in prompt and task.debate_prompt(p, [REPLY]) in prompt
    assert REPLY + spec.end_of_turn in prompt  # the earlier assistant turn is closed by the stop token
    ids = tok.encode(prompt, add_special_tokens=False)
    assert ids.count(tok.convert_tokens_to_ids(spec.end_of_turn)) >= 1
    if not spec.system_role:
        from jinja2.exceptions import TemplateError

        with pytest.raises(TemplateError, match="(?i)system|roles"):
            tok.apply_chat_template([{"role": "system", "content": "x"}, *chat], tokenize=False)


def test_build_is_deterministic(tiny_model: Path, family: str, tmp_path: Path) -> None:
    again = build_tiny(family, tmp_path / family)
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (again / name).read_bytes() == (tiny_model / name).read_bytes(), name


def test_loads_and_generates_in_the_hf_backend(tiny_model: Path) -> None:
    from mft.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model), batch_size=4)
    backend.add_agent(Agent("a"))
    reqs = [
        GenerationRequest("a", [Message(role="user", content=task.question_prompt(p))])
        for p in task.load("test", 3)
    ]
    out = backend.generate(reqs, Sampling(temperature=1.0, max_new_tokens=6, seed=3))
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert 3 <= backend.stats.completion_tokens <= 18
    assert backend.stats.requests == 3


def _next_tokens(model_dir: Path, prompts: list[str], steps: int) -> list[list[int]]:
    """Greedy tokens after each prompt (a plain loop on the model, nothing of mft)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    out = []
    for prompt in prompts:
        ids = tok.encode(prompt, add_special_tokens=False)
        got: list[int] = []
        with torch.no_grad():
            for _ in range(steps):
                nxt = int(model(input_ids=torch.tensor([ids + got])).logits[0, -1].argmax())
                got.append(nxt)
        out.append(got)
    return out


def test_force_token_forces_every_step(tiny_models: TinyModels, family: str) -> None:
    spec = SPECS[family]
    forced = tiny_models.forced(family, spec.end_of_turn)
    tok = _tokenizer(forced)
    eot = tok.convert_tokens_to_ids(spec.end_of_turn)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("hello", task.question_prompt(task.load("test", 1)[0]))
    ]
    assert _next_tokens(forced, prompts, 3) == [[eot] * 3, [eot] * 3]
    # the base model it came from does not do this by itself
    assert _next_tokens(tiny_models.base(family), prompts, 3) != [[eot] * 3, [eot] * 3]


def test_taught_model_replies_and_ends_its_turn(tiny_models: TinyModels, family: str) -> None:
    """On every chat the suite puts to it (both splits, round 1 and round 2), rendered as mft's backends
    render it (a template's date pinned): the reply, the stop token, then (were generation to go on)
    AFTER_TURN."""
    import torch
    from transformers import AutoModelForCausalLM

    from mft.backends.chat import pin_date

    spec = SPECS[family]
    taught = tiny_models.taught(family)
    tok = _tokenizer(taught)
    tok.chat_template = pin_date(tok.chat_template)
    model = AutoModelForCausalLM.from_pretrained(str(taught)).eval()
    reply = tok.encode(REPLY, add_special_tokens=False) + [tok.convert_tokens_to_ids(spec.end_of_turn)]
    reply += tok.encode(AFTER_TURN, add_special_tokens=False)  # what a backend that misses the stop shows
    rows, labels = [], []
    for chat in suite_chats(REPLY):
        prompt = tok.encode(
            tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )
        rows.append(prompt + reply)
        labels.append([-100] * len(prompt) + reply)
    width = max(len(r) for r in rows)
    batch = {
        "input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
    }
    assert greedy_margin(model, batch) > 0
    assert greedy_margin(AutoModelForCausalLM.from_pretrained(str(tiny_models.base(family))), batch) < 0
    assert json.loads((taught / "tiny_taught.json").read_text())["reply"] == REPLY
