"""Per-agent LoRA finetuning on the shared bundled base."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mft.backends.base import Agent, FinetuneSettings, GenerationRequest, Sampling
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
    ids, labels = backend.chat.training_ids(conv)
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


def test_an_adapter_saved_beside_one_named_model_holds_only_its_own_tensors(tmp_path: Path) -> None:
    """The one-model methods name their adapter `model`, a substring of every peft key; with it loaded,
    peft's own filter gave up and saved every adapter into each file, and loading such a file overwrote the
    other adapters with its stale copies (a reproduce running Ours after STaR in one process changed)."""
    from safetensors.torch import load_file

    from mft.backends.hf import HFBackend

    backend = HFBackend("bundled")
    settings = FinetuneSettings(epochs=1, batch_size=4, lr=1e-2, seed=0)
    backend.finetune(Agent("model"), _examples(4), tmp_path / "model", settings)
    a = backend.finetune(Agent("gen_0"), _examples(4, 4), tmp_path / "a", settings)
    b = backend.finetune(Agent("gen_1"), _examples(4, 8), tmp_path / "b", settings)
    saved = load_file(str(Path(a.adapter) / "adapter_model.safetensors"))
    layers = [k for k in backend.model.state_dict() if ".lora_A.gen_0." in k]
    assert len(saved) == 2 * len(layers)  # lora_A and lora_B of each adapted layer, nothing else
    assert not any(n in k for k in saved for n in (".model.weight", ".gen_1.", ".gen_0."))
    # loading gen_0's file again leaves gen_1 as trained
    before = {k: v.clone() for k, v in backend.model.state_dict().items() if ".gen_1." in k}
    backend.agents.pop("gen_0", None)  # forget it, so that add_agent loads the file again
    backend.add_agent(Agent("gen_0", adapter=str(tmp_path / "a")))
    after = {k: v for k, v in backend.model.state_dict().items() if ".gen_1." in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert b.adapter == str(tmp_path / "b")


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


def test_accumulation_and_checkpointing_give_the_gradients_of_one_batch(tmp_path: Path) -> None:
    """An effective batch of 8 run 2 rows at a time with activation checkpointing: the same gradients as
    the 8 at once (float rounding), so the same update."""
    from peft import LoraConfig, get_peft_model

    from mft.backends.hf import HFBackend
    from mft.backends.hf.train import _set_checkpointing, accumulate

    backend = HFBackend("bundled")
    torch.manual_seed(0)  # B != 0, so every LoRA weight gets a gradient
    config = LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(backend.base, config)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    model.train()
    batch = [backend.chat.training_ids(ex) for ex in _examples(8, 40)]
    pad = backend.tokenizer.pad_token_id

    def grads(micro: int, checkpointing: bool) -> tuple[float, list[torch.Tensor]]:
        for p in params:
            p.grad = None
        _set_checkpointing(model, checkpointing)
        loss = accumulate(model, batch, pad, micro, keep_logits=True, dtype=None)
        _set_checkpointing(model, False)
        return loss, [p.grad.clone() for p in params]

    loss_a, a = grads(8, False)
    loss_b, b = grads(2, True)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    scale = max(float(g.abs().max()) for g in a)
    assert scale > 0 and max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True)) < 1e-5 * scale


def test_micro_batches_in_a_finetune(backend, tmp_path: Path) -> None:
    """The settings reach the loop: same first loss (before any update), checkpointing off afterwards."""
    import json

    data = _examples(16, 40)
    whole = FinetuneSettings(epochs=1, batch_size=8, lr=1e-2, seed=3, precision="fp32")
    backend.finetune(Agent("acc"), data, tmp_path / "whole", whole)
    parts = replace(whole, micro_batch_size=2, gradient_checkpointing=True)
    backend.finetune(Agent("acc"), data, tmp_path / "parts", parts)  # same name: same init and order
    la = json.loads((tmp_path / "whole" / "train_stats.json").read_text())
    lb = json.loads((tmp_path / "parts" / "train_stats.json").read_text())
    assert la["steps"] == lb["steps"] == 2 and la["first_loss"] == pytest.approx(lb["first_loss"], rel=1e-6)
    assert not backend.model.base_model.model.is_activation_checkpointing  # off again after training


def test_the_loss_is_the_models_own_on_the_labelled_tokens(backend) -> None:
    """Logits kept only where the next token is labelled, fp32 cross-entropy in chunks: the same number as
    transformers' loss over the whole sequence."""
    from mft.backends.hf.train import collate, token_loss_sum

    encoded = [backend.chat.training_ids(ex) for ex in _examples(6, 60)]
    batch = collate(encoded, backend.tokenizer.pad_token_id)
    n_labels = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        ours = token_loss_sum(backend.base, batch, keep_logits=True) / n_labels
        full = token_loss_sum(backend.base, batch, keep_logits=False) / n_labels
        reference = backend.base(**batch).loss
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    assert float(full) == pytest.approx(float(reference), rel=1e-5)


def test_long_examples_are_cut_to_max_length_and_counted(backend, tmp_path: Path) -> None:
    import json

    data = _examples(4, 70)
    longest = max(len(backend.chat.training_ids(ex)[0]) for ex in data)
    settings = FinetuneSettings(epochs=1, batch_size=4, max_length=longest - 5)
    backend.finetune(Agent("short"), data, tmp_path / "short", settings)
    stats = json.loads((tmp_path / "short" / "train_stats.json").read_text())
    assert 1 <= stats["truncated_examples"] <= 4


def test_learning_rate_schedules() -> None:
    from mft.backends.hf.train import lr_factor

    assert [lr_factor("linear", s, 4, 0) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [round(lr_factor("linear", s, 6, 2), 3) for s in range(6)] == [0.333, 0.667, 1.0, 0.75, 0.5, 0.25]
    assert lr_factor("cosine", 2, 6, 2) == 1.0 and lr_factor("cosine", 4, 6, 2) == pytest.approx(0.5)
    assert lr_factor("constant", 5, 6, 2) == 1.0


@pytest.mark.slow
def test_checkpointing_and_accumulation_lower_peak_memory_at_equal_results() -> None:
    """benchmarks/finetune_memory.py on a small setting: each way in its own process, same adapter weights,
    less peak RSS with micro-batches + activation checkpointing."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "finetune_memory.py"
    spec = importlib.util.spec_from_file_location("finetune_memory", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.compare(hidden=256, layers=4, seq=256, batch=8, micro=2)
    assert r["max_weight_diff"] < 1e-6 and r["plain"]["loss"] == pytest.approx(r["lean"]["loss"], rel=1e-6)
    assert r["lean"]["peak_mib"] < r["plain"]["peak_mib"] - 100, (
        r["plain"]["peak_mib"],
        r["lean"]["peak_mib"],
    )
