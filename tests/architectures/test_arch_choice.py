"""Multiple choice end to end on tiny random-weight chat models with the real loading code: MMLU from its
CSV release and a custom multiple-choice file, debated by `mft debate` (the bundled model knows only
arithmetic, so these tasks run on these models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.cli import main
from mft.records import DebateRecord, read_jsonl
from mft.tasks.mmlu import QUESTION
from tests.architectures.tiny import TinyModels

pytestmark = pytest.mark.architectures
MMLU = Path(__file__).parent.parent / "fixtures" / "mmlu"


def _debate(out: Path, *args: str) -> list[DebateRecord]:
    argv = ["debate", *args, "--limit", "2", "--agents", "2", "--max-new-tokens", "8", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert set(json.loads((out / "summary.json").read_text())["accuracy"]) == {"single", "majority", "debate"}
    return read_jsonl(out / "debate.jsonl", DebateRecord)


def test_mmlu_debates_on_a_chat_model(tiny_models: TinyModels, tmp_path: Path) -> None:
    model = str(tiny_models.base("llama3"))
    records = _debate(tmp_path / "mmlu", "--task", "mmlu", "--data", str(MMLU / "data"), "--model", model)
    for rec in records:
        first = rec.conversations[0][0].content
        assert first == QUESTION.replace("{question}", rec.problem.question) and "A) " in rec.problem.question
        assert rec.conversations[0][2].content.startswith("These are the solutions to the problem from other")
        assert rec.problem.answer in "ABCD" and rec.problem.meta["subject"] in ("astronomy", "virology")


def test_custom_multiple_choice_with_listed_choices(tiny_models: TinyModels, tmp_path: Path) -> None:
    config = tmp_path / "mc.yaml"
    config.write_text(
        f"task: custom\ndata: {MMLU / 'mmlu.jsonl'}\nmodel: {tiny_models.base('qwen2_5')}\n"
        "task_options: {answer_type: choice, choices: ABCD, choices_field: choices}\n"
    )
    records = _debate(tmp_path / "custom", "--config", str(config))
    assert all(") " in rec.problem.question and rec.problem.answer in "ABCD" for rec in records)
