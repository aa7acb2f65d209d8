"""The training objectives' table: one row per objective, each dispatched through its row alone."""

from __future__ import annotations

import importlib
import json
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mft import objectives
from mft.backends.base import Agent, FinetuneSettings
from mft.backends.hf.train import Encoded, TrainResult
from mft.data.examples import Pair, read_training_data, write_examples
from mft.errors import MftError
from mft.objectives import Objective, TrainingObjective
from mft.records import Message

CALLS: list[str] = []


# A loss module of a third objective, defined here: the row names this module, as it would name a new one.
def encode(chat: Any, item: list[Message]) -> Encoded:
    CALLS.append("encode")
    ids, labels = chat.training_ids(item)
    return ids, labels


def loop(model: Any, params: list[Any], encoded: list[Encoded], pad_id: int, *args: Any) -> TrainResult:
    CALLS.append(f"loop {len(encoded)}")
    return TrainResult(losses=[1.5, 0.5])


def train_stats(settings: FinetuneSettings) -> dict[str, Any]:
    return {"objective": "probe"}


def test_every_objective_is_a_row_and_every_row_an_objective() -> None:
    assert set(objectives.KEYS) == set(typing.get_args(Objective))
    for row in objectives.OBJECTIVES:
        module = importlib.import_module(row.loss)
        assert all(callable(getattr(module, f)) for f in ("encode", "loop", "train_stats")), row.key
    with pytest.raises(MftError, match="unknown finetuning objective 'ppo'"):
        objectives.objective("ppo")


def test_an_agents_data_is_read_as_its_objective_trains_on_it(tmp_path: Path) -> None:
    chat = [Message(role="user", content="1+1?"), Message(role="assistant", content="2")]
    pair = Pair([chat[0]], Message(role="assistant", content="2"), Message(role="assistant", content="3"))
    write_examples(tmp_path / "sft.jsonl", [chat])
    write_examples(tmp_path / "dpo.jsonl", [pair])
    assert read_training_data(tmp_path / "sft.jsonl", "sft") == [chat]
    assert read_training_data(tmp_path / "dpo.jsonl", "dpo") == [pair]
    with pytest.raises(MftError, match="a chat example where a preference pair was expected"):
        read_training_data(tmp_path / "sft.jsonl", "dpo")


def test_a_new_objective_is_one_row_and_its_loss_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hf trainer trains by whatever loss module the row names, and records its stats."""
    from mft.backends.hf import HFBackend

    probe = TrainingObjective("probe", "examples", __name__, sequences=1, about="a test's objective")  # type: ignore[arg-type]
    monkeypatch.setitem(objectives.BY_KEY, "probe", probe)
    CALLS.clear()
    backend = HFBackend("bundled")
    examples = [
        [Message(role="user", content=f"{n}+1?"), Message(role="assistant", content=str(n + 1))]
        for n in range(3)
    ]
    settings = replace(FinetuneSettings(epochs=1, batch_size=2), objective="probe")  # type: ignore[arg-type]
    backend.finetune(Agent("gen_0"), examples, tmp_path / "gen_0", settings)
    assert CALLS == ["encode"] * 3 + ["loop 3"]
    stats = json.loads((tmp_path / "gen_0" / "train_stats.json").read_text())
    assert stats == {"examples": 3, "steps": 2, "first_loss": 1.5, "last_loss": 0.5, "objective": "probe"}
