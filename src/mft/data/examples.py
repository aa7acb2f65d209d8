"""The one reader and writer of finetuning example files, one record per JSONL line:

- a chat example, `{"messages": [...]}`: what SFT trains on (loss on the assistant turns);
- a preference pair, `{"prompt": [...], "chosen": [{assistant}], "rejected": [{assistant}]}`: what DPO
  trains on, in TRL's conversational preference format (a file loads as a `datasets` preference dataset).

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


@dataclass(frozen=True)
class Pair:
    """A preference pair: a prompt (the chat before the reply) and two replies to it, chosen and rejected."""

    prompt: list[Message]
    chosen: Message
    rejected: Message

    def chats(self) -> tuple[Example, Example]:
        """The two whole chats, prompt + chosen and prompt + rejected, with the prompt's own assistant turns
        (a critic's earlier answers) kept out of the loss: only the reply is scored."""
        context = [m.model_copy(update={"weight": 0}) if m.role == "assistant" else m for m in self.prompt]
        return [*context, self.chosen], [*context, self.rejected]


def _record(item: Example | Pair) -> dict[str, Any]:
    if isinstance(item, Pair):
        return {
            "prompt": [m.model_dump() for m in item.prompt],
            "chosen": [item.chosen.model_dump()],
            "rejected": [item.rejected.model_dump()],
        }
    return {"messages": [m.model_dump() for m in item]}


def examples_text(examples: Sequence[Example] | Sequence[Pair]) -> str:
    return "".join(json.dumps(_record(x), ensure_ascii=False) + "\n" for x in examples)


def write_examples(path: Path, examples: Sequence[Example] | Sequence[Pair]) -> None:
    """Write a whole example (or pair) file (temp name + rename: a reader never sees half of one)."""
    write_text_atomic(path, examples_text(examples))


def as_examples(items: Sequence[Example] | Sequence[Pair], agent: str) -> list[Example]:
    """`items` as chat examples, or an MftError where they are preference pairs (SFT data was expected)."""
    out = [x for x in items if not isinstance(x, Pair)]
    if len(out) != len(items):
        raise MftError(f"agent {agent!r}: preference pairs given where SFT expects chat examples")
    return out


def as_pairs(items: Sequence[Example] | Sequence[Pair], agent: str) -> list[Pair]:
    """`items` as preference pairs, or an MftError where they are chat examples (DPO data was expected)."""
    out = [x for x in items if isinstance(x, Pair)]
    if len(out) != len(items):
        raise MftError(f"agent {agent!r}: chat examples given where DPO expects preference pairs")
    return out


def _records(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _checked(path: Path, key: str, expected: str, other: str, built_for: str) -> list[dict[str, Any]]:
    """The file's records, each with `key`; a record of the other kind is one line naming its row."""
    records = _records(path)
    for i, rec in enumerate(records, 1):
        if key not in rec:
            raise MftError(
                f"{path}:{i}: {other} where {expected} was expected",
                hint=f"this agent's data was built for {built_for}: finetune it with the "
                f"{built_for.lower()} objective",
            )
    return records


def read_examples(path: Path) -> list[Example]:
    records = _checked(path, "messages", "a chat example", "a preference pair", "DPO")
    return [[Message(**m) for m in rec["messages"]] for rec in records]


def read_pairs(path: Path) -> list[Pair]:
    records = _checked(path, "prompt", "a preference pair", "a chat example", "SFT")
    return [
        Pair(
            [Message(**m) for m in rec["prompt"]], Message(**rec["chosen"][0]), Message(**rec["rejected"][0])
        )
        for rec in records
    ]


def read_training_data(path: Path, key: str) -> list[Example] | list[Pair]:
    """An agent's data file, as objective `key` trains on it (its row's data kind: chat examples or
    preference pairs)."""
    return read_pairs(path) if objective(key).data == "pairs" else read_examples(path)


def as_data(items: Sequence[Example] | Sequence[Pair], key: str, agent: str) -> list[Example] | list[Pair]:
    """`items` as the data objective `key` trains on, or an MftError where they are of the other kind."""
    return as_pairs(items, agent) if objective(key).data == "pairs" else as_examples(items, agent)
