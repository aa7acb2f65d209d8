"""The hf trainer's training curve: `finetune(..., on_step=...)` sees every optimizer step of the bundled
model's finetune, and a tracker draws it (TensorBoard, read back with its own reader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.base import Agent, FinetuneSettings, TrainStep
from mft.backends.hf.train import lr_factor
from mft.records import Message
from mft.tasks import get_task
from mft.tracking import Tracking, read_metrics


def _examples(n: int) -> list[list[Message]]:
    task = get_task("arithmetic")
    return [
        [
            Message(role="user", content=task.question_prompt(p)),
            Message(role="assistant", content=f"The answer is {p.answer}."),
        ]
        for p in task.load("train", n)
    ]


@pytest.mark.slow
def test_each_optimizer_step_reaches_the_callback_and_the_tracker(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mft.backends.hf import HFBackend

    backend = HFBackend("bundled")
    examples = _examples(4)
    settings = FinetuneSettings(epochs=2, batch_size=2, lr=1e-2, seed=0, warmup_ratio=0.25)
    seen: list[TrainStep] = []
    with Tracking.open(tmp_path / "run", ["tensorboard"], "t") as tracking:
        curves = tracking.train_curves(1)
        assert curves is not None
        draw = curves("gen_0")

        def on_step(step: TrainStep) -> None:
            seen.append(step)
            draw(step)

        backend.finetune(Agent("gen_0"), examples, tmp_path / "gen_0", settings, on_step=on_step)
    stats = json.loads((tmp_path / "gen_0" / "train_stats.json").read_text())
    assert [s.step for s in seen] == list(range(1, stats["steps"] + 1)) == [1, 2, 3, 4]
    assert (seen[0].loss, seen[-1].loss) == (stats["first_loss"], stats["last_loss"])
    assert [s.lr for s in seen] == pytest.approx([1e-2 * lr_factor("linear", i, 4, 1) for i in range(4)])
    lengths = [len(backend.chat.training_ids(ex)[0]) for ex in examples]
    assert [s.tokens for s in seen][1::2] == [sum(lengths), 2 * sum(lengths)]  # each epoch: every token

    ledger = read_metrics(tmp_path / "run" / "metrics.json")
    assert ledger["train/iter_1/gen_0/loss"] == {s.step: s.loss for s in seen}
    (events,) = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    drawn = {e.step: e.value for e in acc.Scalars("train/iter_1/gen_0/loss")}
    assert drawn == pytest.approx(ledger["train/iter_1/gen_0/loss"], rel=1e-6)
    assert {e.step: e.value for e in acc.Scalars("train/iter_1/gen_0/lr")} == pytest.approx(
        {s.step: s.lr for s in seen}, rel=1e-6
    )
