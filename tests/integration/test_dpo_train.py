"""DPO in the hf backend: TRL's loss, the agent's previous weights as the reference, one adapter trained."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mft.backends.base import Agent, FinetuneSettings
from mft.data.examples import Pair
from mft.records import Message
from tests.adapters import random_adapter

LOG2 = math.log(2.0)
# shaped as `random_adapter`'s adapters, so an agent can continue from one
DPO = FinetuneSettings(
    objective="dpo",
    rank=4,
    alpha=32,
    target_modules=("q_proj", "v_proj", "down_proj"),
    epochs=1,
    batch_size=4,
    lr=1e-3,
    seed=0,
    precision="fp32",
)


def _pairs() -> list[Pair]:
    q = [Message(role="user", content=f"What is {a}+{b}?") for a, b in ((2, 3), (4, 4), (9, 1), (6, 7))]
    critic = [
        Message(role="user", content="What is 7*8?"),
        Message(role="assistant", content="The answer is 54."),
        Message(role="user", content="Others say 56. Can you give an updated answer?"),
    ]
    out = [
        Pair(
            [m],
            Message(role="assistant", content=f"The answer is {s}."),
            Message(role="assistant", content="No."),
        )
        for m, s in zip(q, (5, 8, 10, 13), strict=True)
    ]
    out.append(
        Pair(
            critic,
            Message(role="assistant", content="7*8=56\nThe answer is 56."),
            Message(role="assistant", content="The answer is 54."),
        )
    )
    return out


@pytest.fixture(scope="module")
def backend():
    from mft.backends.hf import HFBackend

    return HFBackend("bundled")


@pytest.mark.slow
def test_the_loss_is_trls_dpo_loss_on_the_same_batch(tmp_path: Path) -> None:
    """DPOTrainer (a PEFT adapter retrained, its reference a frozen copy of it) and our loss, on TRL's own
    collated batch: the same tokens, the same reply masks and the same loss."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from mft.backends.chat import ChatFormat
    from mft.backends.hf.dpo import dpo_loss, encode_pair, pair_logps, reference_logps
    from mft.toy import CHECKPOINT_DIR

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    base = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR)
    lora = LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, lora)
    pairs = _pairs()
    rows = [
        {
            "prompt": [m.model_dump() for m in p.prompt],
            "chosen": [p.chosen.model_dump()],
            "rejected": [p.rejected.model_dump()],
        }
        for p in pairs
    ]
    args = DPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=len(pairs),
        beta=0.3,
        use_cpu=True,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    assert "ref" in model.peft_config  # TRL's reference: a frozen copy of the adapter as it was given
    # TRL's tokenized pairs, collated by its own collator, in dataset order
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])

    # our chat rendering and reply mask are TRL's, token for token
    chat = ChatFormat(tok)
    ids, mask, n = batch["input_ids"], batch["completion_mask"], len(pairs)
    ours = [encode_pair(chat, p) for p in pairs]
    for i, (chosen, rejected) in enumerate(ours):
        for row, (seq, labels) in ((i, chosen), (n + i, rejected)):
            width = len(seq)
            assert ids[row, :width].tolist() == seq and not batch["attention_mask"][row, width:].any()
            assert mask[row, :width].tolist() == [int(t != -100) for t in labels]

    model.eval()
    ref = reference_logps(model, ours, tok.pad_token_id, 2, True, None)  # the weights before any step
    with torch.no_grad():  # a training step's worth of change, in the adapter being trained only
        for name, p in model.named_parameters():
            if "lora_B.default." in name:
                p.add_(0.05 * torch.randn_like(p))
        chosen, rejected = pair_logps(model, ours, tok.pad_token_id, True)
        mine = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], beta=0.3).mean()
        theirs = trainer.compute_loss(trainer.model, batch)
    assert abs(mine.item() - LOG2) > 1e-3  # not the trivial value: policy and reference differ
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)


def test_policy_equal_to_reference_gives_log2_and_gradients_only_in_the_trained_adapter(
    backend, tmp_path: Path
) -> None:
    from mft.backends.hf.dpo import dpo_loss, encode_pair, pair_logps, reference_logps

    backend.add_agent(Agent("other", str(random_adapter(tmp_path / "other", seed=1))))
    backend.add_agent(Agent("me", str(random_adapter(tmp_path / "me", seed=2))))
    model = backend.model
    model.set_adapter("me")
    for name, p in model.named_parameters():
        p.requires_grad_(".me." in name and "lora_" in name)
    pad = backend.tokenizer.pad_token_id
    pairs = [encode_pair(backend.chat, p) for p in _pairs()]
    ref = reference_logps(model, pairs, pad, 8, True, None)
    model.train()
    try:
        chosen, rejected = pair_logps(model, pairs, pad, True)
        loss = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], beta=0.1)
        assert torch.allclose(loss, torch.full_like(loss, LOG2), atol=1e-6)
        loss.mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".me." in n)
        assert all(g is None for n, g in grads.items() if ".me." not in n)  # base and "other": none
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None


def test_the_reference_is_the_agents_previous_adapter_not_the_base(backend, tmp_path: Path) -> None:
    """Continuing from a previous adapter (far from the base): the first step's loss is log 2, which it
    is only if the reference is that adapter; the other agents and the base stay bit-identical."""
    backend.add_agent(Agent("bystander", str(random_adapter(tmp_path / "bystander", seed=3))))
    previous = random_adapter(tmp_path / "previous", seed=4)
    before = {k: v.clone() for k, v in backend.model.state_dict().items() if ".dpo_agent." not in k}
    trained = backend.finetune(Agent("dpo_agent", str(previous)), _pairs(), tmp_path / "new", DPO)
    stats = json.loads((tmp_path / "new" / "train_stats.json").read_text())
    assert stats["objective"] == "dpo" and stats["examples"] == 5 and stats["steps"] == 2
    assert stats["first_loss"] == pytest.approx(LOG2, abs=1e-5)
    after = backend.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    from safetensors.torch import load_file

    new = load_file(str(Path(trained.adapter) / "adapter_model.safetensors"))
    old = load_file(str(previous / "adapter_model.safetensors"))
    assert set(new) == set(old) and any(not torch.equal(new[k], old[k]) for k in new)  # it was trained

    # with the base as the reference instead, the previous adapter's first loss is not log 2: the test can
    # tell the two apart
    from mft.backends.hf.dpo import dpo_loss, encode_pair, reference_logps

    pad = backend.tokenizer.pad_token_id
    pairs = [encode_pair(backend.chat, p) for p in _pairs()]
    backend.add_agent(Agent("previous", str(previous)))
    backend.model.set_adapter("previous")
    policy = reference_logps(backend.model, pairs, pad, 8, True, None)
    with backend.model.disable_adapter():
        base = reference_logps(backend.model, pairs, pad, 8, True, None)
    assert abs(dpo_loss(policy[:, 0], policy[:, 1], base[:, 0], base[:, 1], 0.1).mean().item() - LOG2) > 1e-4


def test_dpo_finetuning_prefers_the_chosen_replies(backend, tmp_path: Path) -> None:
    settings = FinetuneSettings(objective="dpo", epochs=3, batch_size=5, lr=1e-2, seed=0, precision="fp32")
    steps: list = []
    backend.finetune(Agent("learner"), _pairs(), tmp_path / "learner", settings, on_step=steps.append)
    stats = json.loads((tmp_path / "learner" / "train_stats.json").read_text())
    assert [s.step for s in steps] == [1, 2, 3] and steps[-1].loss == stats["last_loss"]  # the curve
    assert stats["first_loss"] == pytest.approx(LOG2, abs=1e-5)  # a fresh adapter is the base
    assert stats["last_loss"] < stats["first_loss"] - 0.05


@pytest.mark.slow
def test_one_iteration_of_ours_dpo_on_the_bundled_model(tmp_path: Path) -> None:
    """`mft run --method ours_dpo`: pair files, adapters trained by DPO from log 2, and results."""
    from mft.cli import main
    from mft.data.examples import read_pairs
    from mft.methods import BY_KEY

    argv = [
        "run", "--method", BY_KEY["ours_dpo"].run_as, "--agents", "2", "--no-summarize", "--n-train", "12",
        "--n-test", "1", "--iterations", "1", "--min-examples", "1", "--ft-epochs", "1",
        "--diversity-problems", "0", "--runs-dir", str(tmp_path), "--name", "dpo", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    it = tmp_path / "dpo" / "iter_1"
    sizes = json.loads((it / "data" / "sizes.json").read_text())
    assert set(sizes) == {"gen_0", "gen_1", "critic_0", "critic_1"}
    trained = [s for s in sizes if (it / "agents" / s / "adapter_model.safetensors").exists()]
    assert trained and all(sizes[s]["examples"] >= 1 for s in trained)
    for slot in trained:
        assert len(read_pairs(it / "data" / f"{slot}.jsonl")) == sizes[slot]["examples"]
        stats = json.loads((it / "agents" / slot / "train_stats.json").read_text())
        assert stats["objective"] == "dpo" and stats["first_loss"] == pytest.approx(LOG2, abs=1e-4)
    results = json.loads((it / "eval" / "results.json").read_text())
    assert results["iteration"] == 1 and results["problems"] == 1
    assert "| Ours (DPO) |" in (tmp_path / "dpo" / "report.md").read_text()  # its row, from the table
