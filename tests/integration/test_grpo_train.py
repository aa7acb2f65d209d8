"""GRPO in the hf backend: TRL's loss and advantages, replies sampled as the agent being trained, rewards from
the consensus, groups without a signal left out, the reference (base or previous weights), one adapter
trained."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mft.backends.base import Agent, FinetuneSettings, Sampling
from mft.data.examples import Prompt
from mft.data.rewards import ConsensusReward
from mft.errors import MftError
from mft.records import Message
from mft.tasks import get_task
from tests.adapters import random_adapter

ARITHMETIC = get_task("arithmetic")
# shaped as `random_adapter`'s adapters, so an agent can continue from one
GRPO = FinetuneSettings(
    objective="grpo",
    rank=4,
    alpha=32,
    target_modules=("q_proj", "v_proj", "down_proj"),
    epochs=1,
    batch_size=3,
    lr=1e-3,
    seed=0,
    precision="fp32",
    grpo_group=4,
    sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=ARITHMETIC.max_new_tokens, seed=0),
    reward=ConsensusReward(ARITHMETIC),
)


def _prompts() -> list[Prompt]:
    problems = ARITHMETIC.load("train", n=3, seed=0)
    # the gold answer as the "consensus": a reward some sampled replies earn and some do not
    return [Prompt([Message(role="user", content=ARITHMETIC.question_prompt(p))], p.answer) for p in problems]


def _tensors(b: int = 4, t: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(b, t, generator=g) * 3
    mask = torch.ones(b, t)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    return {
        "logps": logps,
        "old": logps + 0.3 * torch.randn(b, t, generator=g),  # ratios away from 1: some clipped
        "ref": logps + 0.5 * torch.randn(b, t, generator=g),
        "adv": torch.randn(b, generator=g),
        "mask": mask,
    }


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_the_loss_is_trls_grpo_loss_on_the_same_tensors(loss_type: str, tmp_path: Path) -> None:
    """GRPOTrainer's own `_compute_loss` (its per-token log-probabilities replaced by the test's), against
    ours on the same policy, old and reference log-probabilities, advantages and mask."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from mft.backends.hf.grpo import grpo_loss
    from mft.toy import CHECKPOINT_DIR

    x = _tensors()
    b, t = x["logps"].shape
    args = GRPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=t,
        beta=0.04,
        epsilon=0.2,
        loss_type=loss_type,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR),
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "1+1?"}] * 4),
        processing_class=AutoTokenizer.from_pretrained(CHECKPOINT_DIR),
    )
    theirs_logps = x["logps"].clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (theirs_logps, torch.zeros(b, t), None)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": x["mask"].long(),
        "advantages": x["adv"],
        "old_per_token_logps": x["old"],
        "ref_per_token_logps": x["ref"],
        "num_items_in_batch": x["mask"].sum(),
    }
    theirs = trainer._compute_loss(trainer.model, inputs)
    theirs.backward()
    ours_logps = x["logps"].clone().requires_grad_(True)
    ours = grpo_loss(
        ours_logps, x["old"], x["ref"], x["adv"], x["mask"],
        beta=0.04, epsilon=0.2, loss_type=loss_type, max_tokens=t,
    )  # fmt: skip
    ours.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert torch.allclose(ours_logps.grad, theirs_logps.grad, atol=1e-6)  # the same gradient too
    # micro-batches add up to the whole batch's loss (gradient accumulation)
    halves = [
        grpo_loss(
            x["logps"][s],
            x["old"][s],
            x["ref"][s],
            x["adv"][s],
            x["mask"][s],
            beta=0.04,
            epsilon=0.2,
            loss_type=loss_type,
            max_tokens=t,
            rows=b,
            tokens=float(x["mask"].sum()),
        )  # fmt: skip
        for s in (slice(0, 2), slice(2, 4))
    ]
    assert sum(h.item() for h in halves) == pytest.approx(ours.item(), abs=1e-6)


def test_group_advantages_are_trls() -> None:
    from trl.trainer.utils import nanstd

    from mft.backends.hf.grpo import group_advantages

    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    mean = rewards.mean(1, keepdim=True)
    trl_scaled = (rewards - mean) / (nanstd(rewards, dim=1).unsqueeze(1) + 1e-4)  # scale_rewards="group"
    assert torch.allclose(group_advantages(rewards, scale=True), trl_scaled)
    assert torch.allclose(group_advantages(rewards, scale=False), rewards - mean)  # "none": Dr. GRPO
    assert not group_advantages(rewards, scale=True)[1].any()  # all agree: no signal


def test_the_consensus_reward_reads_answers_as_the_task_does() -> None:
    reward = ConsensusReward(ARITHMETIC, format_reward=0.25)
    replies = ["so 4+5=9\nThe answer is 9.", "The answer is 8.", "I do not know."]
    assert reward(replies, ["9", "9", "9"]) == [1.25, 0.25, 0.0]
    assert ConsensusReward(ARITHMETIC)(replies, ["9", "9", "9"]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="3 replies but 2"):
        reward(replies, ["9", "9"])


@pytest.fixture(scope="module")
def backend():
    from mft.backends.hf import HFBackend

    return HFBackend("bundled")


def _lora(backend, name: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backend.model.state_dict().items() if f".{name}." in k and "lora_" in k}


def test_an_agent_trains_on_its_own_samples_and_only_its_adapter_moves(backend, tmp_path: Path) -> None:
    """A fresh agent on the base (its LoRA B = 0: it starts as the base, which reaches some answers)."""
    backend.add_agent(Agent("other", str(random_adapter(tmp_path / "other", seed=1))))
    backend.add_agent(Agent("me"))
    other = _lora(backend, "other")
    before = backend.stats.requests
    steps: list = []
    backend.finetune(Agent("me"), _prompts(), tmp_path / "me2", GRPO, on_step=steps.append)
    # its replies were sampled through the backend's own generation: 3 prompts x G = 4
    assert backend.stats.requests - before == 12
    assert all(torch.equal(v, _lora(backend, "other")[k]) for k, v in other.items())
    assert any(v.abs().sum() > 0 for k, v in _lora(backend, "me").items() if "lora_B" in k)  # it moved
    stats = json.loads((tmp_path / "me2" / "train_stats.json").read_text())
    assert stats["objective"] == "grpo" and stats["sampled_replies"] == 12 and stats["groups"] == 3
    assert stats["steps"] == len(steps) == GRPO.grpo_updates  # one sampled batch, two updates
    assert set(stats["curves"]) == {"loss", "reward", "kl", "skipped_groups"}
    assert steps[0].extra["reward"] == stats["curves"]["reward"][0]
    assert 0.0 < stats["curves"]["reward"][0] < 1.0  # some replies reach the answer, some do not


def test_groups_that_all_agree_give_no_signal_and_change_nothing(backend, tmp_path: Path) -> None:
    """A reward every reply earns: every group is skipped, no gradient, and the adapter is untouched (a
    KL term of skipped groups would still have moved it)."""
    backend.add_agent(Agent("same", str(random_adapter(tmp_path / "same", seed=3))))
    same = _lora(backend, "same")
    settings = replace(GRPO, reward=lambda replies, consensus: [1.0] * len(replies))
    backend.finetune(Agent("same", str(tmp_path / "same")), _prompts(), tmp_path / "same2", settings)
    assert all(torch.equal(v, _lora(backend, "same")[k]) for k, v in same.items())
    stats = json.loads((tmp_path / "same2" / "train_stats.json").read_text())
    assert stats["groups_without_signal"] == stats["groups"] == 3
    assert stats["curves"]["skipped_groups"] == [1.0, 1.0]


@pytest.mark.parametrize(("reference", "starts_at_zero"), [("previous", True), ("base", False)])
def test_the_kl_is_to_the_reference_the_settings_name(
    backend, tmp_path: Path, reference: str, starts_at_zero: bool
) -> None:
    """An agent continuing from a random adapter: its first step's KL is 0 against its previous weights
    (the policy is them) and not against the base."""
    start = random_adapter(tmp_path / "start", seed=4)
    backend.add_agent(Agent("ref", str(start)))
    settings = replace(GRPO, grpo_reference=reference, grpo_updates=1, reward=ConsensusReward(ARITHMETIC))
    steps: list = []
    backend.finetune(Agent("ref", str(start)), _prompts(), tmp_path / "ref2", settings, on_step=steps.append)
    first = steps[0].extra
    assert first["skipped_groups"] < 1.0  # some group had a signal, so its KL was measured
    assert (first["kl"] < 1e-6) is starts_at_zero
    assert "ref__reference" not in backend.model.peft_config  # the reference adapter is gone after


def test_grpo_needs_lora_and_a_reward(backend, tmp_path: Path) -> None:
    with pytest.raises(MftError, match="trains LoRA adapters, not whole models"):
        backend.finetune(Agent("full"), _prompts(), tmp_path / "full", replace(GRPO, method="full"))
    with pytest.raises(MftError, match="scores them by a reward"):
        backend.finetune(Agent("norew"), _prompts(), tmp_path / "norew", replace(GRPO, reward=None))


@pytest.mark.slow
def test_one_iteration_of_ours_grpo_on_the_bundled_model(tmp_path: Path) -> None:
    """`mft run --method ours_grpo`: prompt files, adapters trained by GRPO on their own samples, the
    reward and KL per step in train_stats.json, the tracker and the report."""
    from mft.cli import main
    from mft.data.examples import read_prompts
    from mft.tracking.session import read_metrics

    argv = [
        "run", "--method", "ours_grpo", "--agents", "2", "--n-train", "6", "--n-test", "2",
        "--iterations", "1", "--min-examples", "1", "--ft-epochs", "1", "--ft-batch-size", "3",
        "--grpo-group", "3", "--diversity-problems", "0", "--report-to", "tensorboard",
        "--runs-dir", str(tmp_path), "--name", "grpo", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    it = tmp_path / "grpo" / "iter_1"
    sizes = json.loads((it / "data" / "sizes.json").read_text())
    assert set(sizes) == {"gen_0", "gen_1", "critic_0", "critic_1"}
    for slot, size in sizes.items():
        prompts = read_prompts(it / "data" / f"{slot}.jsonl")
        assert len(prompts) == size["examples"] >= 1
        stats = json.loads((it / "agents" / slot / "train_stats.json").read_text())
        assert stats["objective"] == "grpo" and stats["sampled_replies"] == 3 * len(prompts)
        assert len(stats["curves"]["reward"]) == stats["steps"] == 2 * ((len(prompts) + 2) // 3)
    report = (tmp_path / "grpo" / "report.md").read_text()
    assert "| Ours (GRPO) |" in report and "## Training signal" in report
    metrics = read_metrics(tmp_path / "grpo" / "metrics.json")
    assert "train/iter_1/gen_0/reward" in metrics and "train/iter_1/critic_1/kl" in metrics
