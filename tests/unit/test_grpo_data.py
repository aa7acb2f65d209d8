"""Ours (GRPO): each agent's prompts and the consensus from the debate alone, their file format, the method
row and the settings that reach the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from mft.config import RunConfig
from mft.data.builders import critic_prompts, generator_prompts
from mft.data.examples import Prompt, read_pairs, read_prompts, read_training_data, write_examples
from mft.errors import MftError
from mft.method_data import BuildContext
from mft.methods import BY_KEY
from mft.pipeline.assemble import check_objectives, finetune_settings, objective_of
from mft.tasks import get_task
from tests.unit.test_dpo_pairs import RECORDS

eq = get_task("arithmetic").is_equivalent


def test_a_generator_gets_the_question_and_a_critic_its_own_context_with_the_consensus() -> None:
    gen = generator_prompts(RECORDS, 1)
    # p3 has no consensus: no prompt (nothing to reward)
    assert [(p.prompt[-1].content, p.consensus) for p in gen] == [("Q p1", "5"), ("Q p2", "8")]
    assert [m.role for m in gen[0].prompt] == ["user"]
    critic = critic_prompts(RECORDS, 2)
    assert [p.consensus for p in critic] == ["5", "8"]
    assert critic[0].prompt == RECORDS[0].conversations[2][:-1]  # everything before its final reply
    assert critic[0].prompt[-1].role == "user"
    # its own earlier answers are context, never trained on
    assert all(m.weight == 0 for m in critic[0].context() if m.role == "assistant")


def test_prompt_files_round_trip_and_refuse_the_other_kinds(tmp_path: Path) -> None:
    prompts = generator_prompts(RECORDS, 0) + critic_prompts(RECORDS, 0)
    write_examples(tmp_path / "gen.jsonl", prompts)
    assert (
        read_prompts(tmp_path / "gen.jsonl") == prompts == read_training_data(tmp_path / "gen.jsonl", "grpo")
    )
    first = (tmp_path / "gen.jsonl").read_text().splitlines()[0]
    assert first.startswith('{"prompt": [{"role": "user"') and first.endswith('"consensus": "5"}')
    with pytest.raises(MftError, match="gen.jsonl:1: a prompt with its consensus where a preference pair"):
        read_pairs(tmp_path / "gen.jsonl")
    with pytest.raises(MftError, match="built for GRPO: finetune it with the grpo objective"):
        read_training_data(tmp_path / "gen.jsonl", "sft")


def test_the_grpo_method_trains_every_slot_on_its_prompts() -> None:
    method = BY_KEY["ours_grpo"]
    data = method.build(RECORDS, eq, BuildContext(3, 2 / 3, 0, 1))
    assert sorted(data) == [f"{r}_{n}" for r in ("critic", "gen") for n in range(3)]
    assert all(isinstance(x, Prompt) for d in data.values() for x in d.items())
    assert data["gen_0"].sizes == {"examples": 2} and data["gen_0"].examples == []
    cfg = RunConfig(method="ours_grpo")
    assert {objective_of(cfg, s) for s in method.slot_names(3)} == {"grpo"}
    assert objective_of(RunConfig(method="ours"), "gen_0") == "sft"


def test_grpo_settings_reach_the_trainer_with_the_runs_sampling_and_a_consensus_reward() -> None:
    task = get_task("arithmetic")
    cfg = RunConfig(method="ours_grpo", grpo_group=6, grpo_loss="dr_grpo", grpo_beta=0.0, temperature=0.7)
    settings = finetune_settings(cfg, 2, task)
    assert (settings.grpo_group, settings.grpo_loss, settings.grpo_beta) == (6, "dr_grpo", 0.0)
    assert settings.sampling.temperature == 0.7 and settings.sampling.max_new_tokens == task.max_new_tokens
    assert settings.reward is not None and settings.reward(["The answer is 5."], ["5"]) == [1.0]
    assert finetune_settings(cfg, 2).reward is None  # without the task: no reward (SFT and DPO need none)


def test_a_backend_that_does_not_train_by_grpo_is_refused_before_any_model_work() -> None:
    check_objectives(RunConfig(method="ours_grpo", backend="vllm"))  # the hf trainer on the same base
    with pytest.raises(MftError, match="trains by GRPO, which the openai backend does not do"):
        check_objectives(RunConfig(method="ours_grpo", backend="openai"))
    with pytest.raises(ValueError, match="grpo_group"):
        RunConfig(method="ours_grpo", grpo_group=1)
