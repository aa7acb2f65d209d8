"""Tiny random-weight models of real architectures, with their real chat templates and special tokens.

Each family is built from its transformers config class (2 layers, hidden 64) and a small tokenizer trained
here with the `tokenizers` library the way the family's real one is built: byte-level BPE split by the
family's regex (Llama 3, Qwen) or sentencepiece-style BPE on "▁"-marked words (Mistral, Phi-3, Gemma 2),
with the family's special tokens at their places in the vocabulary, its bos/eos/pad, whether encoding adds
bos, Phi-3's whitespace-eating role tokens and Qwen3's non-special `<think>` tokens. The chat templates are
read from the installed TRL package (Mistral's, which TRL does not ship, is inline), never copied here, and
`generation_config.eos_token_id` lists every token that ends a turn, as each family's instruct model does.
Nothing is downloaded; a family builds in well under a second once its modules are imported.

`force_token` and `teach_constant_reply` derive models whose greedy output is known, so tests can tell a
backend that stops at the end of a turn from one that runs on, and make a real `mft run` reach consensus.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("llama3", "qwen2_5", "qwen3", "phi3", "mistral", "gemma2")

# Mistral-7B-Instruct-v0.2's chat template as published with the model (TRL ships no Mistral template):
# `[INST] ... [/INST]` around user turns, every assistant turn closed by eos, no system role.
MISTRAL_V02_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

# The pre-tokenizer regexes of the real byte-level tokenizers: Llama 3 groups up to 3 digits, Qwen2/3
# split every digit; both keep runs of newlines together (so "\n\n" before a reply is one token).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Special:
    """A token the tokenizer never splits; `special=False` is an added but ordinary token (Qwen3 <think>)."""

    content: str
    special: bool = True
    rstrip: bool = False  # eats the whitespace after it when encoding (Phi-3's role and end tokens)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str  # transformers' config class is looked up from this
    config: dict[str, Any]
    template: str  # a file of trl/chat_templates, or the template itself (Mistral)
    style: str  # "bytelevel" (with `split` regex) or "sentencepiece" (with `prepend` "first"/"never")
    first: tuple[Special, ...]  # special tokens at the start of the vocabulary (sentencepiece models)
    last: tuple[Special, ...]  # added after the trained vocabulary (Llama 3, Qwen, Phi-3's chat tokens)
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    add_bos: bool  # whether encoding with add_special_tokens=True prepends bos (it does for most)
    end_of_turn: str  # what an assistant turn ends with: generation must stop there
    generation_eos: tuple[str, ...]  # generation_config.eos_token_id, in the real model's order
    system_role: bool = True
    split: str = ""
    prepend: str = "first"
    # markers a correct training label may add around a reply besides whitespace: TRL's Qwen3 training
    # template puts an (empty) think block in every assistant turn; Phi-3's ends a chat with eos
    label_prefix: str = ""
    label_suffix: str = ""
    template_strips: bool = False  # the template trims message content (`| trim`)


def _s(*tokens: str, rstrip: bool = False) -> tuple[Special, ...]:
    return tuple(Special(t, rstrip=rstrip) for t in tokens)


SPECS: dict[str, Family] = {
    # Llama-3.2-Instruct in miniature: GQA, llama3 rope scaling, tied embeddings; the tokenizer's eos is
    # <|end_of_text|> (as in Llama 3 Instruct's original release) while turns end with <|eot_id|>.
    "llama3": Family(
        name="llama3",
        model_type="llama",
        config={
            "num_key_value_heads": 2,
            "head_dim": 16,
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 512,
            },
        },
        template="llama3_2.jinja",
        style="bytelevel",
        split=LLAMA3_SPLIT,
        first=(),
        last=_s(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>",
            "<|reserved_special_token_2|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",
            "<|eot_id|>",
            "<|python_tag|>",
        ),
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad=None,
        unk=None,
        add_bos=True,
        end_of_turn="<|eot_id|>",
        generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        template_strips=True,
    ),
    # Qwen2.5-Instruct: tokenizer eos is <|im_end|>, pad <|endoftext|>, no bos; sliding window configured
    # but off, as in the released configs.
    "qwen2_5": Family(
        name="qwen2_5",
        model_type="qwen2",
        config={
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "use_sliding_window": False,
            "sliding_window": 32768,
        },
        template="qwen2_5.jinja",
        style="bytelevel",
        split=QWEN_SPLIT,
        first=(),
        last=_s("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        add_bos=False,
        end_of_turn="<|im_end|>",
        generation_eos=("<|im_end|>", "<|endoftext|>"),
    ),
    # Qwen3: head_dim independent of hidden/heads, q/k norms; <think> and </think> are added tokens that
    # are not special (real Qwen3 tokenizers decode them even with skip_special_tokens).
    "qwen3": Family(
        name="qwen3",
        model_type="qwen3",
        config={
            "num_key_value_heads": 2,
            "head_dim": 32,
            "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "use_sliding_window": False,
        },
        template="qwen3.jinja",
        style="bytelevel",
        split=QWEN_SPLIT,
        first=(),
        last=(
            *_s("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            Special("<think>", special=False),
            Special("</think>", special=False),
        ),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        add_bos=False,
        end_of_turn="<|im_end|>",
        generation_eos=("<|im_end|>", "<|endoftext|>"),
        label_prefix="<think>\n\n</think>\n\n",
    ),
    # Phi-3-mini-4k-instruct: sentencepiece vocabulary (<unk>, <s>, </s> first), chat tokens added at the
    # end with rstrip (they swallow the newline the template writes after them), tokenizer eos
    # <|endoftext|>, no bos added, fused qkv / gate_up projections, sliding window 2047; its
    # generation_config ends generation on <|endoftext|>, <|assistant|> and <|end|>.
    "phi3": Family(
        name="phi3",
        model_type="phi3",
        config={"num_key_value_heads": 4, "sliding_window": 2047, "tie_word_embeddings": False},
        template="phi3.jinja",
        style="sentencepiece",
        prepend="first",
        first=_s("<unk>", "<s>", "</s>"),
        last=(
            Special("<|endoftext|>"),
            *_s("<|assistant|>", "<|system|>", "<|end|>", "<|user|>", rstrip=True),
        ),
        bos="<s>",
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        unk="<unk>",
        add_bos=False,
        end_of_turn="<|end|>",
        generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"),
        label_suffix="<|endoftext|>",
    ),
    # Mistral-7B-Instruct-v0.2: [INST] is plain text (not a token), turns end with eos </s>; no pad.
    "mistral": Family(
        name="mistral",
        model_type="mistral",
        config={
            "num_key_value_heads": 2,
            "head_dim": 16,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        template=MISTRAL_V02_TEMPLATE,
        style="sentencepiece",
        prepend="first",
        first=_s("<unk>", "<s>", "</s>"),
        last=(),
        bos="<s>",
        eos="</s>",
        pad=None,
        unk="<unk>",
        add_bos=True,
        end_of_turn="</s>",
        generation_eos=("</s>",),
        system_role=False,
    ),
    # Gemma 2: head_dim and query scaling set apart from hidden/heads, logit soft-capping, alternating
    # sliding-window and global layers (a window short enough that round-2 debate prompts exceed it), tied
    # embeddings scaled by sqrt(hidden); <pad>=0 <eos>=1 <bos>=2; the template refuses a system message.
    "gemma2": Family(
        name="gemma2",
        model_type="gemma2",
        config={
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 64,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": True,
        },
        template="gemma.jinja",
        style="sentencepiece",
        prepend="never",
        first=_s("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"),
        last=(),
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        end_of_turn="<end_of_turn>",
        generation_eos=("<eos>", "<end_of_turn>"),
        system_role=False,
        template_strips=True,
    ),
}

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 64, 2, 4, 128
SEED = 0


def chat_template_text(family: Family) -> str:
    if family.template.endswith(".jinja"):
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / family.template).read_text(encoding="utf-8")
    return family.template


def corpus() -> list[str]:
    """What the tokenizers are trained on: the arithmetic task's prompts, debate prompts and replies in
    plain text (never rendered through a template, so no merge spans a template's markup)."""
    from mft.tasks import get_task

    task = get_task("arithmetic")
    problems = task.load("train", 12) + task.load("test", 12)
    replies = [f"The answer is {n}." for n in range(-20, 40)] + ["Let me think step by step."]
    texts = [task.question_prompt(p) for p in problems]
    texts += [task.debate_prompt(problems[i], replies[i : i + 2]) for i in range(0, 20, 2)]
    texts += replies + ["You are a helpful assistant. hello world system user assistant model"]
    return texts


def _tokenizer(family: Family) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def added(s: Special) -> AddedToken:
        return AddedToken(s.content, special=s.special, rstrip=s.rstrip, normalized=False)

    if family.style == "bytelevel":
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(family.split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        core.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        vocab = 420
    else:
        # sentencepiece-like: words carry a leading "▁", digits and newlines are pieces of their own
        unk = family.unk or "<unk>"
        core = Tokenizer(models.BPE(unk_token=unk))
        core.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split("\n", behavior="isolated"),
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=family.prepend, split=True),
            ]
        )
        core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=family.prepend, split=True)
        alphabet = [chr(c) for c in range(32, 127)] + ["\n", "▁"]
        vocab = 300
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[added(s) for s in family.first],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    core.train_from_iterator(corpus(), trainer=trainer)
    core.add_tokens([added(s) for s in family.last if not s.special])
    core.add_special_tokens([added(s) for s in family.last if s.special])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        unk_token=family.unk,
        add_bos_token=family.add_bos,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = chat_template_text(family)
    return tok


def build_tiny(family_name: str, out_dir: Path) -> Path:
    """Write a tiny random-weight model of `family_name` with its tokenizer and chat template to
    `out_dir`: loadable by AutoModelForCausalLM / AutoTokenizer.from_pretrained (and so by HFBackend)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    family = SPECS[family_name]
    tok = _tokenizer(family)
    ids = {s.content: tok.convert_tokens_to_ids(s.content) for s in (*family.first, *family.last)}

    def tid(token: str | None) -> int | None:
        return None if token is None else ids[token]

    eos_ids = [ids[t] for t in family.generation_eos]
    config = AutoConfig.for_model(
        family.model_type,
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=2048,
        bos_token_id=tid(family.bos),
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        pad_token_id=tid(family.pad),
        **family.config,
    )
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tid(family.bos),
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],  # an int where the real one is (Mistral)
        pad_token_id=tid(family.pad),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    (out_dir / "tiny_family.json").write_text(json.dumps({"family": family_name}) + "\n")
    return out_dir


def family_of(model_dir: Path) -> Family:
    return SPECS[json.loads((Path(model_dir) / "tiny_family.json").read_text())["family"]]


def token_id(model_dir: Path, token: str) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tid = tok.convert_tokens_to_ids(token)
    assert isinstance(tid, int) and tid != tok.unk_token_id and tok.convert_ids_to_tokens(tid) == token, token
    return tid


def force_token(model_dir: Path, token: str, out_dir: Path | None = None) -> Path:
    """A copy of the model whose greedy next token is always `token`, whatever the input.

    One residual dimension is made a large constant (every input embedding gets +C there, untied from the
    output matrix); the final norm turns it into a positive feature of every position, and only `token`'s
    output row reads it, so `token` wins by a wide margin (through Gemma 2's soft-capping too: tanh keeps
    the order). The layers stay random and run as usual.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    tid = token_id(model_dir, token)
    out_dir = Path(out_dir) if out_dir is not None else model_dir.parent / f"{model_dir.name}-force-{tid}"
    if (out_dir / "config.json").exists():
        return out_dir
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        head = emb.detach().clone() if model.config.tie_word_embeddings else model.lm_head.weight.detach()
        model.config.tie_word_embeddings = False
        # +50 on a dimension whose other entries are ~0.02: the final norm maps it to about +sqrt(hidden)
        emb[:, 0] += 50.0
        head = head.clone()
        head[:, 0] = 0.0
        head[tid, 0] = 100.0
        model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def render(tok: Any, messages: list[dict[str, str]], **kwargs: Any) -> str:
    """The chat as the tokenizer's template renders it, opening the assistant's turn."""
    text: str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    return text


def _template_variants(family: Family) -> list[dict[str, Any]]:
    """Rendering options a backend might use: Llama 3 prints a date (the one mft's backends pin, and two
    others, so the model ignores which), Qwen3 may be asked not to think (an empty think block then opens
    the reply)."""
    if family.name == "llama3":
        return [{"date_string": d} for d in ("26 Jul 2024", "03 Jan 2025", "19 Nov 2027")]
    if family.name == "qwen3":
        return [{}, {"enable_thinking": False}]
    return [{}]


def debate_chats(n: int, reply: str, seed: int = 0, split: str = "train") -> list[list[dict[str, str]]]:
    """Chats ending where an agent answers in a 2-round arithmetic debate of 2-3 agents (round 1: the
    question; round 2: its own answer `reply`, then the others' answers), on `n` problems of `split`. The
    others' answers are `reply` or, for variety, another "The answer is N." reply."""
    from mft.tasks import get_task

    task = get_task("arithmetic")
    rng = random.Random(f"{seed}:{split}")
    chats: list[list[dict[str, str]]] = []
    for p in task.load(split, n):
        question = {"role": "user", "content": task.question_prompt(p)}
        others = [reply if rng.random() < 0.7 else f"The answer is {rng.randint(0, 99)}." for _ in range(2)]
        debate = {"role": "user", "content": task.debate_prompt(p, others[: rng.randint(1, 2)])}
        chats += [[question], [question, {"role": "assistant", "content": reply}, debate]]
    return chats


# The problems of each split the suite shows a taught model (`mft run --n-train 4 --n-test 4`, and a few
# more): its teaching holds it to the reply on exactly these, not on problems like them.
SUITE_PROBLEMS = 6
# The other agents' answers a round-2 prompt of the suite shows: a society of 2 that agrees, and one of 3
# with a dissenter.
SUITE_OTHERS: tuple[tuple[str, ...], ...] = (("{reply}",), ("{reply}", "The answer is 12."))


def suite_chats(reply: str) -> list[list[dict[str, str]]]:
    """Every chat the suite puts to a taught model: round 1 and round 2 (after its own `reply` and the
    others' answers of SUITE_OTHERS) on the first SUITE_PROBLEMS problems of both splits."""
    from mft.tasks import get_task

    task = get_task("arithmetic")
    chats: list[list[dict[str, str]]] = []
    for split in ("train", "test"):
        for p in task.load(split, SUITE_PROBLEMS):
            question = {"role": "user", "content": task.question_prompt(p)}
            chats.append([question])
            for others in SUITE_OTHERS:
                debate = {
                    "role": "user",
                    "content": task.debate_prompt(p, [o.format(reply=reply) for o in others]),
                }
                chats.append([question, {"role": "assistant", "content": reply}, debate])
    return chats


Example = tuple[list[int], list[int]]  # input ids, labels (-100 off the reply)


def _encode_examples(
    tok: Any, family: Family, chats: list[list[dict[str, str]]], reply_ids: list[int]
) -> list[Example]:
    """Prompt ids + reply ids, labelled on the reply only, in every rendering variant."""
    out: list[Example] = []
    for chat in chats:
        for kwargs in _template_variants(family):
            prompt = tok.encode(render(tok, chat, **kwargs), add_special_tokens=False)
            out.append((prompt + reply_ids, [-100] * len(prompt) + reply_ids))
    return out


def _batch(examples: list[Example], pad: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):  # right padding: positions count from 0 in every row
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def greedy_margin(model: Any, batch: dict[str, Any]) -> float:
    """The smallest margin, over every labelled position of `batch`, of the label's logit over the best
    other token's. Greedy decoding with teacher forcing is greedy decoding, so > 0 means the model greedily
    writes exactly the labelled tokens (the reply and its stop token) after each prompt."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    where = target != -100
    picked = logits[:, :-1].float()[where]
    gold = target[where][:, None]
    chosen = picked.gather(-1, gold)[:, 0]
    others = picked.scatter(-1, gold, float("-inf")).max(-1).values
    return float((chosen - others).min())


# what a taught model writes after its end-of-turn token (never seen when generation stops there)
AFTER_TURN = "Then the answer is 99."

# logit margin of the taught reply over any other token, on every chat of `suite_chats`: far beyond what
# another CPU's float rounding moves, and a short LoRA finetune on the same replies (what `mft run` does
# next) moves the logits of these tiny models far less
MARGIN = 3.0


def teach_constant_reply(model_dir: Path, reply: str, out_dir: Path, max_steps: int = 300) -> Path:
    """A fully finetuned copy of the model that greedily answers `reply`, then its end-of-turn token,
    after any arithmetic question prompt and after round-2 debate prompts -- and, past the end-of-turn
    token, goes on with AFTER_TURN: a backend that does not stop there returns visible text, not the
    random tokens a model happens to write after it (which may be special, or a stop token by chance).

    Trained on the rendered prompt's ids followed by the reply's ids, the end-of-turn id and AFTER_TURN's
    ids -- the ids generation sees -- with the loss on those only, until greedy decoding gives exactly
    that, by MARGIN, on every chat the suite puts to it (`suite_chats`, which it is also trained on): no
    test then depends on how the model generalises to a prompt it was not checked on, which differs from
    one CPU's float rounding to another's. An AssertionError if it does not get there in `max_steps`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family = family_of(model_dir)
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    eot = tok.convert_tokens_to_ids(family.end_of_turn)
    reply_ids = tok.encode(reply, add_special_tokens=False) + [eot]
    reply_ids += tok.encode(AFTER_TURN, add_special_tokens=False)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eot
    suite = _encode_examples(tok, family, suite_chats(reply), reply_ids)
    train = _encode_examples(tok, family, debate_chats(16, reply), reply_ids) + suite
    check = _batch(suite, pad)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    margin = float("-inf")
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(**_batch(rng.sample(train, 8), pad)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0:
            model.eval()
            margin = greedy_margin(model, check)
            if margin > MARGIN:
                break
    model.eval()
    assert margin > MARGIN, f"{family.name}: not taught after {max_steps} steps (margin {margin:.2f})"
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "tiny_taught.json").write_text(json.dumps({"reply": reply, "steps": step}) + "\n")
    return out_dir


# What the taught models answer to every arithmetic question: an answer the task extracts ("7"), so two
# agents agree and a run builds consensus data from their debates.
REPLY = "The answer is 7."


class TinyModels:
    """Every model of the session in one temporary directory, each built the first time it is asked for
    (a test of one family does not pay for the others)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[tuple[str, ...], Path] = {}

    def _once(self, key: tuple[str, ...], build: Callable[[], Path]) -> Path:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def base(self, family: str) -> Path:
        """The random-weight model of `family`."""
        return self._once((family,), lambda: build_tiny(family, self.root / family))

    def forced(self, family: str, token: str) -> Path:
        """`family`'s model whose greedy output is always `token`."""
        return self._once((family, "force", token), lambda: force_token(self.base(family), token))

    def taught(self, family: str) -> Path:
        """`family`'s model taught to answer REPLY, then end its turn."""
        return self._once(
            (family, "taught"),
            lambda: teach_constant_reply(self.base(family), REPLY, self.root / f"{family}-taught"),
        )
