"""transformers + peft backend: one base model in memory, every agent a LoRA adapter on it.

Generation packs all requests of a round -- across problems -- into left-padded batches of at most
`batch_size` sequences per adapter and generates them with a preallocated KV cache read only as far as it
is filled (`kv_cache.py`; on a CPU the prompts are prefilled into it a few at a time, then decoded as one
batch), that adapter active (agents with no adapter: adapters disabled, the bare base). On a CPU
(`merge_adapters`), "active" means merged: the batch runs on the base with the adapter added to a copy of
the adapted weights (see `adapters.merged`). When each agent has only a few requests, they share
batches through peft's mixed-adapter inference (`adapter_names=`, each row through its own adapter). How
requests are grouped and batched: `generation.py`. Scoring (`score_responses`) scores one agent a call,
its adapter active (merged) as for a per-adapter batch.

The loaded model (`model.LoadedModel`: base, tokenizer, chat format, the adapters' PeftModel) is what the
trainer (`finetune.py`) and the scorer (`scoring.py`) are handed; this class holds one and delegates to it
(`backend.model`, `.base`, `.tokenizer`, `.chat`, `.device` are its).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from mft.backends.base import (
    Agent,
    Backend,
    FinetuneSettings,
    GenerationRequest,
    Sampling,
    StepCallback,
    TrainingData,
    resolve_model_path,
)
from mft.backends.chat import ChatFormat
from mft.backends.hf.adapters import active, load_adapter
from mft.backends.hf.generation import (
    Interrupt,
    check_settings,
    group_requests,
    mixed_batching,
    new_tokens,
    prefill_chunk_tokens,
    sampling_kwargs,
    token_budget,
)
from mft.backends.hf.model import (
    BASE_ADAPTER,
    LoadedModel,
    is_full_model,
    left_pad,
    load_base,
    on_device,
    plan_batches,
    prepare_base,
)
from mft.errors import MftError
from mft.objectives import KEYS as OBJECTIVE_KEYS
from mft.objectives import objective
from mft.records import Message


def torch_float32() -> Any:
    import torch

    return torch.float32


class HFBackend(Backend):
    name = "hf"
    objectives = OBJECTIVE_KEYS  # every row of the table: their loss modules are this trainer's
    mixes_bases = True
    ray_trainer = "hf"
    scores_responses = True
    loads_adapters = True
    estimates_memory = True
    # KV cache for generate: "filled" (ours, `kv_cache.py`) preallocates it like transformers' "static" and
    # lets attention read only the positions written so far (faster than "static" on a CPU; models with
    # sliding-window or non-attention layers fall back to "static"); None: transformers' dynamic cache,
    # which grows by torch.cat every step (slower than "static"). Measurements: docs/performance.md.
    cache_implementation: str | None = "filled"
    # how requests of several LoRA agents are batched: "auto", "per-adapter" or "mixed" (see
    # `generation.mixed_batching`)
    adapter_batching: str = "auto"
    # whether a per-adapter batch runs on the base with that adapter merged into its weights (see
    # `adapters.merged`)
    merge_adapters: str = "auto"
    # with the filled cache, prompts are prefilled in chunks of about this many tokens (rows x prompt
    # width, at least one row), then decoded as one batch (`kv_cache.prefill_in_chunks`); "auto": 2048 on a
    # CPU (a chunk's activations stay in the CPU's caches, faster than one forward: docs/performance.md),
    # the whole batch in one forward elsewhere; 0: the same
    prefill_tokens: int | str = "auto"
    # scoring (`score_responses`, the diversity metrics) forwards at most this many tokens (rows x padded
    # width) at once; "auto": 2048 on a CPU (as prefill), on a GPU what its free memory holds
    # (`scoring.score_budget`); 0: no cap but `batch_size`
    score_tokens: int | str = "auto"

    def __init__(
        self,
        model: str = "bundled",
        batch_size: int = 256,
        device: str | None = None,
        dtype: str = "auto",
        adapter_batching: str | None = None,
        merge_adapters: str | None = None,
        kv_cache: str | None = None,
        prefill_tokens: int | str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        batch_tokens: int | str = "auto",
        offload_full_models: str = "auto",
        preloaded: tuple[Any, Any] | None = None,
    ) -> None:
        """`preloaded`: a (causal LM, tokenizer) already built, used as the base instead of loading
        `model`, which then only names it: a directory with its config.json and tokenizer for what reads
        them again (the memory estimate; full finetuning reloads the weights from it). The model is used as
        built (`dtype`, `attn_implementation` and `device_map` do not apply; `device`: where to move it)."""
        super().__init__()
        check_settings(
            batch_tokens, offload_full_models, prefill_tokens, kv_cache, merge_adapters, adapter_batching
        )
        if prefill_tokens is not None:
            self.prefill_tokens = prefill_tokens
        if kv_cache is not None:
            self.cache_implementation = None if kv_cache == "dynamic" else kv_cache
        if merge_adapters is not None:
            self.merge_adapters = merge_adapters
        if adapter_batching is not None:
            self.adapter_batching = adapter_batching
        self.batch_size = batch_size
        if preloaded is not None:
            base, tokenizer, self.load_warnings = prepare_base(*preloaded, resolve_model_path(model), device)
        else:
            base, tokenizer, self.load_warnings = load_base(
                model,
                device=device,
                dtype=dtype,
                attn_implementation=attn_implementation,
                device_map=device_map,
            )
        if merge_adapters == "on" and base.dtype != torch_float32():
            # W + BA in bfloat16 rounds most of a small LoRA delta away: a merged batch would not compute
            # what the adapter does
            raise MftError(
                f"merge_adapters: on needs float32 weights, not {base.dtype}",
                hint="leave merge_adapters at auto (it merges only float32 weights), or use dtype: float32",
            )
        # generation batches: at most `batch_size` rows and, on a GPU, as many cached tokens as fit
        self.batch_tokens = batch_tokens
        # a fully finetuned agent's own model waits on the CPU while others generate (auto: on a GPU)
        self.offload_full_models = (
            base.device.type == "cuda" if offload_full_models == "auto" else offload_full_models == "on"
        )
        # how prompts are rendered, where turns end (every stop id) and what finetuning trains on
        chat = ChatFormat(tokenizer, base.generation_config, chat_template_kwargs)
        # the model becomes a PeftModel once the first adapter is added
        self.loaded = LoadedModel(model, base, tokenizer, chat, model=base)
        self.agents: dict[str, Agent] = {}
        self.full_models: dict[str, Any] = {}  # fully finetuned agents, each its own model

    # -- the loaded model's parts, as the backend's own attributes --------------------------------------
    @property
    def model(self) -> Any:
        """The base, or the PeftModel wrapping it that holds the agents' adapters."""
        return self.loaded.model

    @model.setter
    def model(self, value: Any) -> None:
        self.loaded.model = value

    @property
    def base(self) -> Any:
        return self.loaded.base

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def chat(self) -> ChatFormat:
        return self.loaded.chat

    @property
    def device(self) -> Any:
        return self.loaded.device

    @property
    def model_name(self) -> str:
        return self.loaded.name

    # -- agents --------------------------------------------------------------------------------------------
    def add_agent(self, agent: Agent) -> None:
        if agent.name == BASE_ADAPTER:
            raise MftError(f"agent name {BASE_ADAPTER!r} is reserved")
        if self.agents.get(agent.name) == agent:
            return
        self.full_models.pop(agent.name, None)
        if agent.adapter is not None and is_full_model(Path(agent.adapter)):
            # a fully finetuned agent (`method: full`): its own model, generated separately
            from transformers import AutoModelForCausalLM

            self.loaded.drop_adapter(agent.name)
            full = AutoModelForCausalLM.from_pretrained(agent.adapter, dtype=self.base.dtype)
            self.full_models[agent.name] = full.to("cpu" if self.offload_full_models else self.device).eval()
        elif agent.adapter is not None:
            load_adapter(self.loaded, agent.name, Path(agent.adapter))
        self.agents[agent.name] = agent

    def adapter_of(self, name: str) -> str:
        if name not in self.agents:
            raise MftError(f"unknown agent {name!r}", hint="add it to the society first")
        return BASE_ADAPTER if self.agents[name].adapter is None else name

    # -- generation ----------------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        return self.chat.prompt(request.messages)

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        import torch
        from transformers import StoppingCriteriaList

        if not requests:
            return []
        start = time.time()
        prompts = [self.render(r) for r in requests]
        encoded = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        adapters = [self.adapter_of(r.agent) for r in requests]
        outputs: list[str] = [""] * len(requests)
        pad = self.tokenizer.pad_token_id
        # per own model, per adapter or mixed (`generation.py`)
        groups = group_requests(requests, adapters, self.full_models, self._mixed)
        lengths = [len(e) for e in encoded]
        usage = [(len(e), 0) for e in encoded]
        stop_early = Interrupt(self.interrupt) if self.interrupt is not None else None
        b = 0
        for key in sorted(groups):
            kind, name = key
            model = self.full_models[name] if kind == "model" else self.model
            # Sort by length so each batch pads little; results are put back in request order.
            order = sorted(groups[key], key=lambda i: (len(encoded[i]), i))
            budget = token_budget(self.batch_tokens, model)
            for idx in plan_batches(order, lengths, self.batch_size, sampling.max_new_tokens, budget):
                ids, mask = left_pad([encoded[i] for i in idx], pad)
                width = ids.shape[1]
                # batches are slices of requests sorted by prompt length: the last one's is the longest
                fit = new_tokens(
                    sampling.max_new_tokens,
                    width,
                    self.context_length(),
                    self.model_name,
                    requests[idx[-1]].agent,
                )
                kwargs: dict[str, Any] = {
                    "input_ids": ids.to(self.device),
                    "attention_mask": mask.to(self.device),
                    "max_new_tokens": fit,
                    "pad_token_id": pad,
                    "eos_token_id": list(self.chat.stop_ids),  # every end-of-turn token, not just eos
                    **sampling_kwargs(sampling),
                }
                if kind == "mixed":
                    kwargs["adapter_names"] = [adapters[i] for i in idx]
                if stop_early is not None:
                    if stop_early.fired:
                        break  # the caller no longer wants any of this call's responses
                    kwargs["stopping_criteria"] = StoppingCriteriaList([stop_early])
                # any integer seed (an API client's int64 included) maps into torch's 64-bit seed range
                torch.manual_seed((sampling.seed * 1_000_003 + b) % 2**64)
                b += 1
                offload = kind == "model" and self.offload_full_models
                with torch.inference_mode(), self._active(kind, name), on_device(model, self.device, offload):
                    kwargs.update(self._cache_kwargs(model, kwargs))
                    out = model.generate(**kwargs)
                new = out[:, width:].tolist()
                for row, i in enumerate(idx):
                    # the response ends before its stop token (padding follows it); a response that hit
                    # max_new_tokens has none
                    text_ids, stopped = self.chat.until_stop(new[row])
                    outputs[i] = self.tokenizer.decode(text_ids, skip_special_tokens=True).strip()
                    n_new = len(text_ids) + int(stopped)
                    self.stats.completion_tokens += n_new
                    per = self.stats.per_agent_completion_tokens
                    per[requests[i].agent] = per.get(requests[i].agent, 0) + n_new
                    self.stats.prompt_tokens += len(encoded[i])
                    usage[i] = (len(encoded[i]), n_new)
        self.last_usage = usage
        self.stats.requests += len(requests)
        self.stats.seconds += time.time() - start
        return outputs

    def context_length(self) -> int | None:
        return self.loaded.context_length()

    def _cache_kwargs(self, model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """generate()'s KV-cache argument for the batch of `kwargs` (see `kv_cache.cache_argument`)."""
        from mft.backends.hf.kv_cache import cache_argument

        prefill = prefill_chunk_tokens(self.prefill_tokens, self.device)
        return cache_argument(model, kwargs, self.cache_implementation, prefill)

    def _mixed(self, group_sizes: list[int]) -> bool:
        """Whether to batch requests of several adapters together (`generation.mixed_batching`)."""
        return mixed_batching(self.adapter_batching, self.loaded.has_adapters, group_sizes, self.batch_size)

    def _active(self, kind: str, adapter: str) -> contextlib.AbstractContextManager[Any]:
        """Context in which the shared model computes as `adapter` (the base: adapters disabled)."""
        if kind != "adapter":
            return contextlib.nullcontext()
        return active(self.loaded, adapter, self._merge_enabled())

    def _merge_enabled(self) -> bool:
        # auto: on a CPU, where it was measured faster (docs/performance.md) and
        # where the transient merged copy of the adapted weights is cheap next to the activations; and only
        # float32 weights, which hold W + BA without rounding the delta away
        if self.merge_adapters == "auto":
            return bool(self.device.type == "cpu" and self.base.dtype == torch_float32())
        return self.merge_adapters == "on"

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        return len(self.tokenizer.encode(self.chat.prompt(messages), add_special_tokens=False))

    def count_tokens(self, texts: list[str]) -> int | None:
        return (
            sum(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"])
            if texts
            else 0
        )

    # -- scoring (diversity metrics) -------------------------------------------------------------------------
    def score_responses(
        self,
        agent: str,
        prompts: list[list[Message]],
        responses: list[str],
        batch_size: int | None = None,
    ) -> list[tuple[Any, Any]]:
        """Agent `agent`'s next-token distributions on given replies (see `scoring.score_responses`): one
        adapter for the whole call, active as for generation (merged into the weights on a CPU, where
        lossless), in batches of at most `batch_size` rows (default: the backend's) and `score_tokens`."""
        from mft.backends.hf.scoring import score_budget, score_responses

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not responses:
            return []
        adapter, own = self.adapter_of(agent), self.full_models.get(agent)
        context = (
            on_device(own, self.device, self.offload_full_models)
            if own is not None
            else self._active("adapter", adapter)
        )
        model, rows = (own if own is not None else self.model), batch_size or self.batch_size
        with context:
            budget = score_budget(self.score_tokens, own if own is not None else self.base)
            return score_responses(self.loaded, model, prompts, responses, rows, budget)

    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
        sample: Any = None,
    ) -> Agent:
        """LoRA-train `agent` (from its current adapter, or fresh on the base) and save it to `out_dir`;
        `on_step` sees each optimizer step; an online objective (GRPO) samples by `sample` (default: this
        backend's own generation, `grpo.sampler`)."""
        from mft.backends.hf.finetune import train_adapter, train_full
        from mft.backends.hf.grpo import sampler

        cfg = settings or FinetuneSettings()
        if cfg.method == "full":
            own = agent.adapter if agent.adapter is not None and is_full_model(Path(agent.adapter)) else None
            model, _ = train_full(self.loaded, agent.name, own, examples, out_dir, cfg, on_step)
            self.loaded.drop_adapter(agent.name)
            self.full_models[agent.name] = model.to("cpu") if self.offload_full_models else model
        elif cfg.method == "lora":
            self.full_models.pop(agent.name, None)
            if objective(cfg.objective).online and sample is None:
                sample = sampler(self, agent.name, out_dir)
            train_adapter(self.loaded, agent.name, agent.adapter, examples, out_dir, cfg, on_step, sample)
        else:
            raise MftError(f"unknown finetuning method {cfg.method!r}", hint="use 'lora' or 'full'")
        trained = Agent(agent.name, str(out_dir))
        self.agents[agent.name] = trained  # the in-memory model/adapter already holds the saved weights
        return trained

    def finished_agent(self, name: str, out_dir: Path) -> Agent | None:
        """Agent `name` on the adapter `finetune` saved in `out_dir`, or None if it saved none there."""
        out_dir = Path(out_dir)
        done = (out_dir / "adapter_model.safetensors").exists() or is_full_model(out_dir)
        return Agent(name, str(out_dir)) if done else None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "batch_size": self.batch_size}
