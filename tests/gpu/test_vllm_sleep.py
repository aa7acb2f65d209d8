"""One finetune between two rounds on one GPU: the vLLM engine sleeps while the trainer runs (its memory
handed back), wakes up, and serves the new adapter, never the old one (skipped without CUDA and vllm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adapters import random_adapter

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

from mft.backends.base import Agent, FinetuneSettings, GenerationRequest, Sampling  # noqa: E402
from mft.records import Message  # noqa: E402
from mft.tasks import get_task  # noqa: E402

task = get_task("arithmetic")
REPLY = "3*4=12. 12+5=17. The answer is 17."  # what the finetuned agent is taught to say to every question


def _in_use() -> int:
    """The device's memory in use, every process's (vLLM's engine runs in its own)."""
    free, total = torch.cuda.mem_get_info()
    return total - free


@pytest.mark.gpu
def test_finetune_sleeps_the_engine_then_serves_the_new_adapter(tmp_path: Path) -> None:
    from mft.backends.vllm import VLLMBackend

    backend = VLLMBackend("bundled", gpu_memory_utilization=0.3, max_loras=2, max_lora_rank=8)
    assert backend.sleeps  # auto: on a GPU
    old = Agent("a", str(random_adapter(tmp_path / "old", 1)))
    backend.add_agent(old)
    problems = task.load("test", 16)
    reqs = [GenerationRequest("a", [Message(role="user", content=task.question_prompt(p))]) for p in problems]
    greedy = Sampling(temperature=0.0, max_new_tokens=64)
    before = backend.generate(reqs, greedy)
    old_id = backend.lora_ids["a"]

    trainer = backend.trainer()
    awake = _in_use()
    seen: list[int] = []
    train = trainer.finetune

    def watched(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(_in_use())  # while the engine sleeps, before the trainer allocates anything
        return train(*args, **kwargs)

    trainer.finetune = watched
    examples = [
        [Message(role="user", content=task.question_prompt(p)), Message(role="assistant", content=REPLY)]
        for p in task.load("train", 64)
    ]
    settings = FinetuneSettings(rank=8, alpha=16, epochs=4, lr=1e-2, batch_size=16, seed=0)
    new = backend.finetune(old, examples, tmp_path / "new", settings)
    (asleep,) = seen
    # level-1 sleep offloads the weights and drops the KV cache: most of the engine's share comes back
    reserved = 0.3 * torch.cuda.mem_get_info()[1]
    assert awake - asleep > 0.8 * reserved, (awake, asleep, reserved)
    assert _in_use() > asleep + 0.8 * reserved  # awake again, its memory taken back

    backend.add_agent(new)
    assert backend.lora_ids["a"] != old_id  # a fresh id: vLLM's cache of the old weights is never hit
    after = backend.generate(reqs, greedy)
    assert after != before
    trainer.add_agent(new)
    theirs = trainer.generate(reqs, greedy)  # the trainer's own reading of the adapter it wrote
    same = sum(o == t for o, t in zip(after, theirs, strict=True))
    assert same >= len(reqs) - 2, list(zip(after, theirs, strict=True))  # bf16 kernels may split a near-tie
    assert sum(REPLY in o for o in after) >= len(reqs) - 2, after
    backend.close()
