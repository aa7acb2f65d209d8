"""The one reader and writer of finetuning example files: one {"messages": [...]} chat per JSONL line.

The same format serves the hf trainer (`iter_<k>/data/<agent>.jsonl`) and the fine-tuning API's upload
(OpenAI's chat format), so there is one writer for both. Text is written as UTF-8 (not \\u escapes): the
files are meant to be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mft.records import Message, write_text_atomic

Example = list[Message]


def examples_text(examples: Sequence[Example]) -> str:
    return "".join(
        json.dumps({"messages": [m.model_dump() for m in ex]}, ensure_ascii=False) + "\n" for ex in examples
    )


def write_examples(path: Path, examples: Sequence[Example]) -> None:
    """Write a whole example file (temp name + rename: a reader never sees half of one)."""
    write_text_atomic(path, examples_text(examples))


def read_examples(path: Path) -> list[Example]:
    with open(path, encoding="utf-8") as fh:
        return [[Message(**m) for m in json.loads(line)["messages"]] for line in fh if line.strip()]
