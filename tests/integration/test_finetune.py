"""Per-agent LoRA finetuning on the shared bundled base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mft.backends.base import Agent, FinetuneSettings, GenerationRequest, Sampling
from mft.backends.hf_finetune import tokenize_chat
from mft.records import Message
from mft.tasks import get_task

task = get_task("arithmetic")


def _examples(n: int, offset: int = 0) -> list[list[Message]]:
    out = []
    for p in task.load("train", n + offset)[offset:]:
        out.append(
            [
                Message(role="user", content=task.question_prompt(p)),
                Message(role="assistant", content=f"The answer is {p.answer}."),
            ]
        )
    return out


def _state(backend, name: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().clone() for k, v in get_peft_model_state_dict(backend.model, adapter_name=name).items()
    }


@pytest.fixture(scope="module")
def backend():
    from mft.backends.hf import HFBackend

    return HFBackend("bundled")


def test_labels_cover_exactly_the_assistant_turns(backend) -> None:
    conv = [
        Message(role="user", content="What is 1+1?"),
        Message(role="assistant", content="The answer is 2."),
        Message(role="user", content="Sure?"),
        Message(role="assistant", content="Yes, the answer is 2."),
    ]
    ids, labels = tokenize_chat(backend.tokenizer, conv)
    assert len(ids) == len(labels)
    trained = backend.tokenizer.decode([t for t in labels if t != -100])
    assert trained == "The answer is 2.<|end|>Yes, the answer is 2.<|end|>"


def test_finetune_changes_only_its_own_adapter(backend, tmp_path: Path) -> None:
    settings = FinetuneSettings(epochs=1, batch_size=4, lr=1e-2, seed=0)
    base_before = {k: v.clone() for k, v in backend.base.state_dict().items() if "lora_" not in k}
    a = backend.finetune(Agent("a"), _examples(8), tmp_path / "a", settings)
    b = backend.finetune(Agent("b"), _examples(8, 8), tmp_path / "b", settings)
    a_before, b_before = _state(backend, "a"), _state(backend, "b")
    b2 = backend.finetune(b, _examples(8, 16), tmp_path / "b2", settings)  # continue b from its weights
    a_after, b_after = _state(backend, "a"), _state(backend, "b")
    assert all(torch.equal(a_before[k], a_after[k]) for k in a_before)  # bit-identical
    assert any(not torch.equal(b_before[k], b_after[k]) for k in b_before)
    # peft wraps each targeted layer: its weight is then found under `<layer>.base_layer.weight`
    base_after = {
        k.replace(".base_layer", ""): v for k, v in backend.base.state_dict().items() if "lora_" not in k
    }
    assert set(base_before) == set(base_after)
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert (Path(b2.adapter) / "adapter_model.safetensors").exists() and (tmp_path / "b").exists()
    assert a.adapter == str(tmp_path / "a")

    # the saved adapter is what the backend generated with: a fresh backend loading it agrees
    from mft.backends.hf import HFBackend

    fresh = HFBackend("bundled")
    fresh.add_agent(b2)
    backend.add_agent(b2)
    req = [GenerationRequest("b", _examples(1)[0][:1])]
    greedy = Sampling(temperature=0.0, max_new_tokens=30)
    assert fresh.generate(req, greedy) == backend.generate(req, greedy)


def test_training_lowers_the_loss(backend, tmp_path: Path) -> None:
    import json

    backend.finetune(
        Agent("c"), _examples(16), tmp_path / "c", FinetuneSettings(epochs=4, batch_size=4, lr=1e-2, seed=0)
    )
    stats = json.loads((tmp_path / "c" / "train_stats.json").read_text())
    assert stats["last_loss"] < stats["first_loss"]


def test_full_finetuning_option(tmp_path: Path) -> None:
    """method=full: the agent gets its own model; the shared base and LoRA agents are untouched."""
    from mft.backends.hf import HFBackend

    backend = HFBackend("bundled")
    base_before = {k: v.clone() for k, v in backend.base.state_dict().items()}
    lora = backend.finetune(
        Agent("l"), _examples(8), tmp_path / "l", FinetuneSettings(epochs=1, batch_size=4, lr=1e-2)
    )
    lora_before = _state(backend, "l")
    full = backend.finetune(
        Agent("f"),
        _examples(16),
        tmp_path / "f",
        FinetuneSettings(epochs=3, batch_size=4, lr=3e-3, method="full"),
    )
    assert (tmp_path / "f" / "config.json").exists() and (tmp_path / "f" / "model.safetensors").exists()
    assert all(
        torch.equal(base_before[k], v) for k, v in backend.base.state_dict().items() if k in base_before
    )
    assert all(torch.equal(lora_before[k], v) for k, v in _state(backend, "l").items())
    trained = backend.full_models["f"].state_dict()
    assert any(not torch.equal(base_before[k], trained[k]) for k in base_before)
    assert backend.finished_agent("f", tmp_path / "f") == full

    backend.add_agent(Agent("plain"))
    greedy = Sampling(temperature=0.0, max_new_tokens=30)
    reqs = [GenerationRequest(name, _examples(1)[0][:1]) for name in ("f", "l", "plain")]
    mixed = backend.generate(reqs, greedy)  # one call: the full agent and the shared-base agents together
    fresh = HFBackend("bundled")
    fresh.add_agent(full)
    fresh.add_agent(lora)
    assert fresh.generate([reqs[0]], greedy)[0] == mixed[0]  # the saved full model is what generated
    assert fresh.generate([reqs[1]], greedy)[0] == mixed[1]
    # continuing from the previous full model (next iteration) starts from its weights, not the base
    again = fresh.finetune(
        full,
        _examples(4, 16),
        tmp_path / "f2",
        FinetuneSettings(epochs=1, batch_size=4, lr=1e-9, method="full"),
    )
    cont = fresh.full_models["f"].state_dict()
    assert all(torch.allclose(trained[k], cont[k], atol=1e-6) for k in trained)
    assert again.adapter == str(tmp_path / "f2")
