"""The one reader and writer of finetuning example files, one record per JSONL line:

- a chat example, `{"messages": [...]}`: what SFT trains on (loss on the assistant turns);
- a preference pair, `{"prompt": [...], "chosen": [{assistant}], "rejected": [{assistant}]}`: what DPO
  trains on, in TRL's conversational preference format (a file loads as a `datasets` preference dataset);
- a prompt, `{"prompt": [...], "consensus": "..."}`: what GRPO samples replies to, each rewarded by whether
  its answer is the society's consensus (TRL's conversational prompt-only format, the consensus an extra
  column as its reward functions take them).

The chat format serves the hf trainer (`iter_<k>/data/<agent>.jsonl`) and the fine-tuning API's upload
(OpenAI's chat format), so there is one writer for both. Text is written as UTF-8 (not \\u escapes): the
files are meant to be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mft.errors import MftError
from mft.objectives import objective
from mft.records import Message, write_text_atomic

Example = list[Message]


def as_context(prompt: list[Message]) -> list[Message]:
    """`prompt` as the context of a trained reply: its own assistant turns (a critic's earlier answers) out of
    the loss (`weight` 0)."""
    return [m.model_copy(update={"weight": 0}) if m.role == "assistant" else m for m in prompt]


@dataclass(frozen=True)
class Pair:
    """A preference pair: a prompt (the chat before the reply) and two replies to it, chosen and rejected."""

    prompt: list[Message]
    chosen: Message
    rejected: Message

    def chats(self) -> tuple[Example, Example]:
        """The two whole chats, prompt + chosen and prompt + rejected, with the prompt's own assistant turns
        (a critic's earlier answers) kept out of the loss: only the reply is scored."""
        context = as_context(self.prompt)
        return [*context, self.chosen], [*context, self.rejected]


@dataclass(frozen=True)
class Prompt:
    """A prompt to sample replies to (the chat before the reply) and the society's consensus answer on its
    problem, which a reply is rewarded for reaching."""

    prompt: list[Message]
    consensus: str

    def context(self) -> list[Message]:
        """The prompt, its own assistant turns (a critic's earlier answers) out of any loss."""
        return as_context(self.prompt)


Item = Example | Pair | Prompt
Items = Sequence[Example] | Sequence[Pair] | Sequence[Prompt]


def _record(item: Item) -> dict[str, Any]:
    if isinstance(item, Prompt):
        return {"prompt": [m.model_dump() for m in item.prompt], "consensus": item.consensus}
    if isinstance(item, Pair):
        return {
            "prompt": [m.model_dump() for m in item.prompt],
            "chosen": [item.chosen.model_dump()],
            "rejected": [item.rejected.model_dump()],
        }
    return {"messages": [m.model_dump() for m in item]}


def examples_text(examples: Items) -> str:
    return "".join(json.dumps(_record(x), ensure_ascii=False) + "\n" for x in examples)


def write_examples(path: Path, examples: Items) -> None:
    """Write a whole example (or pair) file (temp name + rename: a reader never sees half of one)."""
    write_text_atomic(path, examples_text(examples))


# each data kind (`objectives.DataKind`): its class, the key its records have, what a person calls one, and
# the objective that trains on it
_KINDS: dict[str, tuple[type, str, str, str]] = {
    "examples": (list, "messages", "a chat example", "SFT"),
    "pairs": (Pair, "chosen", "a preference pair", "DPO"),
    "prompts": (Prompt, "consensus", "a prompt with its consensus", "GRPO"),
}


def _kind_of(record: dict[str, Any]) -> str:
    return next((k for k, (_, key, _, _) in _KINDS.items() if key in record), "examples")


def _as_kind(items: Items, kind: str, agent: str) -> list[Any]:
    cls, _, expected, _ = _KINDS[kind]
    out = [x for x in items if isinstance(x, cls)]
    if len(out) != len(items):
        other = next(x for x in items if not isinstance(x, cls))
        what = _KINDS[_kind_of(_record(other))][2]
        raise MftError(f"agent {agent!r}: {what} given where {_KINDS[kind][3]} expects {expected}")
    return out


def as_examples(items: Items, agent: str) -> list[Example]:
    """`items` as chat examples, or an MftError where they are of another kind (SFT data was expected)."""
    return _as_kind(items, "examples", agent)


def as_pairs(items: Items, agent: str) -> list[Pair]:
    """`items` as preference pairs, or an MftError where they are of another kind (DPO data was expected)."""
    return _as_kind(items, "pairs", agent)


def _records(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _checked(path: Path, kind: str) -> list[dict[str, Any]]:
    """The file's records, each of data kind `kind`; a record of another kind is one line naming its row
    and the objective its data was built for."""
    records = _records(path)
    _, key, expected, _ = _KINDS[kind]
    for i, rec in enumerate(records, 1):
        if key not in rec:
            _, _, found, built_for = _KINDS[_kind_of(rec)]
            raise MftError(
                f"{path}:{i}: {found} where {expected} was expected",
                hint=f"this agent's data was built for {built_for}: finetune it with the "
                f"{built_for.lower()} objective",
            )
    return records


def read_examples(path: Path) -> list[Example]:
    return [[Message(**m) for m in rec["messages"]] for rec in _checked(path, "examples")]


def read_pairs(path: Path) -> list[Pair]:
    return [
        Pair(
            [Message(**m) for m in rec["prompt"]], Message(**rec["chosen"][0]), Message(**rec["rejected"][0])
        )
        for rec in _checked(path, "pairs")
    ]


def read_prompts(path: Path) -> list[Prompt]:
    return [
        Prompt([Message(**m) for m in rec["prompt"]], str(rec["consensus"]))
        for rec in _checked(path, "prompts")
    ]


def read_training_data(path: Path, key: str) -> list[Example] | list[Pair] | list[Prompt]:
    """An agent's data file, as objective `key` trains on it (its row's data kind)."""
    kind = objective(key).data
    if kind == "prompts":
        return read_prompts(path)
    return read_pairs(path) if kind == "pairs" else read_examples(path)


def as_data(items: Items, key: str, agent: str) -> list[Example] | list[Pair] | list[Prompt]:
    """`items` as the data objective `key` trains on, or an MftError where they are of another kind."""
    return _as_kind(items, objective(key).data, agent)
