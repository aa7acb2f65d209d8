"""transformers + peft backend: one base model in memory, every agent a LoRA adapter on it.

Generation packs all requests of a round -- across problems -- into left-padded batches of at most
`batch_size` sequences per adapter and generates them with a preallocated KV cache read only as far as it
is filled (`kv_cache.py`; on a CPU the prompts are prefilled into it a few at a time, then decoded as one
batch), that adapter active (agents with no adapter: adapters disabled, the bare base). On a CPU
(`merge_adapters`), "active" means merged: the batch runs on the base with the adapter added to a copy of
the adapted weights (see `adapters.merged`). When each agent has only a few requests, they share
batches through peft's mixed-adapter inference (`adapter_names=`, each row through its own adapter), as
scoring (`score_responses`) always does.
"""

from __future__ import annotations

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
)
from mft.backends.chat import ChatFormat
from mft.backends.hf.adapters import mergeable, merged
from mft.backends.hf.model import (
    BASE_ADAPTER,
    free_token_budget,
    is_full_model,
    left_pad,
    load_base,
    on_device,
    plan_batches,
)
from mft.errors import MftError
from mft.records import Message


class _Interrupt:
    """A transformers stopping criterion that ends every row once `poll()` says so (and stays fired)."""

    def __init__(self, poll: Any) -> None:
        self.poll, self.fired = poll, False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.fired = self.fired or bool(self.poll())
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)


def torch_float32() -> Any:
    import torch

    return torch.float32


class HFBackend(Backend):
    name = "hf"
    objectives = ("sft", "dpo")
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
    # how requests of several LoRA agents are batched: "auto", "per-adapter" or "mixed" (see `_mixed`)
    adapter_batching: str = "auto"
    # whether a per-adapter batch runs on the base with that adapter merged into its weights (see
    # `adapters.merged`)
    merge_adapters: str = "auto"
    # with the filled cache, prompts are prefilled in chunks of about this many tokens (rows x prompt
    # width, at least one row), then decoded as one batch (`kv_cache.prefill_in_chunks`); "auto": 2048 on a
    # CPU (a chunk's activations stay in the CPU's caches, faster than one forward: docs/performance.md),
    # the whole batch in one forward elsewhere; 0: the same
    prefill_tokens: int | str = "auto"

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
    ) -> None:
        super().__init__()
        if batch_tokens != "auto" and not (isinstance(batch_tokens, int) and batch_tokens > 0):
            raise MftError(f"batch_tokens must be auto or a whole number > 0, not {batch_tokens!r}")
        if offload_full_models not in ("auto", "on", "off"):
            raise MftError(f"offload_full_models must be auto, on or off, not {offload_full_models!r}")
        if prefill_tokens is not None:
            if prefill_tokens != "auto" and not (isinstance(prefill_tokens, int) and prefill_tokens >= 0):
                raise MftError(f"prefill_tokens must be auto or a whole number >= 0, not {prefill_tokens!r}")
            self.prefill_tokens = prefill_tokens
        if kv_cache is not None:
            if kv_cache not in ("filled", "static", "dynamic"):
                raise MftError(f"kv_cache must be filled, static or dynamic, not {kv_cache!r}")
            self.cache_implementation = None if kv_cache == "dynamic" else kv_cache
        if merge_adapters is not None:
            if merge_adapters not in ("auto", "on", "off"):
                raise MftError(f"merge_adapters must be auto, on or off, not {merge_adapters!r}")
            self.merge_adapters = merge_adapters
        if adapter_batching is not None:
            if adapter_batching not in ("auto", "per-adapter", "mixed"):
                raise MftError(
                    f"adapter_batching must be auto, per-adapter or mixed, not {adapter_batching!r}"
                )
            self.adapter_batching = adapter_batching
        self.model_name = model
        self.batch_size = batch_size
        self.base, self.tokenizer = load_base(
            model, device=device, dtype=dtype, attn_implementation=attn_implementation, device_map=device_map
        )
        if merge_adapters == "on" and self.base.dtype != torch_float32():
            # W + BA in bfloat16 rounds most of a small LoRA delta away: a merged batch would not compute
            # what the adapter does
            raise MftError(
                f"merge_adapters: on needs float32 weights, not {self.base.dtype}",
                hint="leave merge_adapters at auto (it merges only float32 weights), or use dtype: float32",
            )
        # generation batches: at most `batch_size` rows and, on a GPU, as many cached tokens as fit
        self.batch_tokens = batch_tokens
        # a fully finetuned agent's own model waits on the CPU while others generate (auto: on a GPU)
        self.offload_full_models = (
            self.device.type == "cuda" if offload_full_models == "auto" else offload_full_models == "on"
        )
        # how prompts are rendered, where turns end (every stop id) and what finetuning trains on
        self.chat = ChatFormat(self.tokenizer, self.base.generation_config, chat_template_kwargs)
        self.model: Any = self.base  # becomes a PeftModel once the first adapter is added
        self.agents: dict[str, Agent] = {}
        self.full_models: dict[str, Any] = {}  # fully finetuned agents, each its own model

    @property
    def device(self) -> Any:
        return self.base.device

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

            if self.model is not self.base and agent.name in self.model.peft_config:
                self.model.delete_adapter(agent.name)
            full = AutoModelForCausalLM.from_pretrained(agent.adapter, dtype=self.base.dtype)
            self.full_models[agent.name] = full.to("cpu" if self.offload_full_models else self.device).eval()
        elif agent.adapter is not None:
            from peft import PeftModel

            adapter_dir = Path(agent.adapter)
            if not (adapter_dir / "adapter_config.json").exists():
                raise MftError(
                    f"agent {agent.name!r}: {adapter_dir} is not a LoRA adapter (no adapter_config.json)",
                    hint="re-run the finetune stage for this agent",
                )
            if self.model is not self.base and agent.name in self.model.peft_config:
                self.model.delete_adapter(agent.name)
            try:
                if self.model is self.base:
                    self.model = PeftModel.from_pretrained(
                        self.base, str(adapter_dir), adapter_name=agent.name
                    )
                else:
                    self.model.load_adapter(str(adapter_dir), adapter_name=agent.name)
            except Exception as exc:  # noqa: BLE001 - a corrupt adapter becomes one clear message
                raise MftError(
                    f"agent {agent.name!r}: could not load adapter {adapter_dir}: {str(exc).splitlines()[0]}",
                    hint="delete that adapter directory and re-run its finetune",
                ) from exc
            self.model.eval()
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
        # A fully finetuned agent has its own model. LoRA and base agents share one model; their requests
        # are batched per adapter with that adapter active (adapters off for base agents), or all in
        # peft's mixed-adapter batches (`adapter_names=`, each row through its own adapter).
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(requests):
            key = ("model", r.agent) if r.agent in self.full_models else ("adapter", adapters[i])
            groups.setdefault(key, []).append(i)
        if self._mixed([len(v) for k, v in groups.items() if k[0] == "adapter"]):
            mixed = [i for k in sorted(groups) if k[0] == "adapter" for i in groups.pop(k)]
            groups[("mixed", "")] = mixed
        lengths = [len(e) for e in encoded]
        usage = [(len(e), 0) for e in encoded]
        stop_early = _Interrupt(self.interrupt) if self.interrupt is not None else None
        b = 0
        for key in sorted(groups):
            kind, name = key
            model = self.full_models[name] if kind == "model" else self.model
            # Sort by length so each batch pads little; results are put back in request order.
            order = sorted(groups[key], key=lambda i: (len(encoded[i]), i))
            budget = self._token_budget(model)
            for idx in plan_batches(order, lengths, self.batch_size, sampling.max_new_tokens, budget):
                ids, mask = left_pad([encoded[i] for i in idx], pad)
                width = ids.shape[1]
                kwargs: dict[str, Any] = {
                    "input_ids": ids.to(self.device),
                    "attention_mask": mask.to(self.device),
                    "max_new_tokens": self._new_tokens(sampling.max_new_tokens, width, requests, idx),
                    "pad_token_id": pad,
                    "eos_token_id": list(self.chat.stop_ids),  # every end-of-turn token, not just eos
                }
                if sampling.temperature > 0:
                    kwargs.update(
                        do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0
                    )
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
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
        config = self.base.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _new_tokens(self, asked: int, width: int, requests: list[GenerationRequest], idx: list[int]) -> int:
        """`asked` new tokens, or as many as fit in the model's context after the batch's prompts (`width`
        tokens, padded); a prompt that leaves no room is an MftError naming its agent."""
        context = self.context_length()
        if context is None or width + asked <= context:
            return asked
        if width >= context:
            longest = requests[idx[-1]].agent  # batches are slices of requests sorted by prompt length
            raise MftError(
                f"agent {longest!r}: a prompt of {width} tokens does not fit in the context of model "
                f"{self.model_name!r} ({context} tokens)",
                hint="use fewer agents or rounds, summarize: true, shorter questions or a smaller "
                "max_new_tokens (shorter responses make shorter debate prompts)",
            )
        return context - width

    def _cache_kwargs(self, model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """generate()'s KV-cache argument for the batch of `kwargs` (see `kv_cache.cache_argument`)."""
        from mft.backends.hf.kv_cache import cache_argument

        return cache_argument(model, kwargs, self.cache_implementation, self._prefill_tokens())

    def _token_budget(self, model: Any) -> int | None:
        if self.batch_tokens == "auto":
            return free_token_budget(model) if model.device.type == "cuda" else None
        return int(self.batch_tokens)

    def _prefill_tokens(self) -> int:
        if self.prefill_tokens == "auto":
            return 2048 if self.device.type == "cpu" else 0
        return int(self.prefill_tokens)

    def _mixed(self, group_sizes: list[int]) -> bool:
        """Whether to batch requests of several adapters together (peft mixed-adapter batches).

        Per adapter is faster for LoRA agents (measured on the bundled model on a CPU:
        benchmarks/adapter_batching.py, docs/performance.md), but the requests may need more batches,
        and a batch's fixed per-step cost is worth about 40 rows.
        So: per adapter, unless that needs more extra batches than the rows it saves (n/160); a handful
        of requests per agent (an interactive turn of `mft serve`, a tiny eval) stays mixed.
        """
        if self.adapter_batching != "auto" or self.model is self.base or len(group_sizes) < 2:
            return self.adapter_batching == "mixed" and self.model is not self.base
        n, bs = sum(group_sizes), self.batch_size
        extra = sum(-(-k // bs) for k in group_sizes) - -(-n // bs)
        return extra > n / 160

    def _active(self, kind: str, adapter: str) -> Any:
        """Context in which the shared model computes as `adapter` (the base: adapters disabled)."""
        import contextlib

        if kind != "adapter" or self.model is self.base:
            return contextlib.nullcontext()
        if adapter == BASE_ADAPTER:
            return self.model.disable_adapter()
        if self._merge_enabled() and mergeable(self.model, adapter):
            return merged(self.model, adapter)
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

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
        """Agent `agent`'s next-token distributions on given replies (see `scoring.score_responses`)."""
        from mft.backends.hf.scoring import score_responses

        return score_responses(self, agent, prompts, responses, batch_size)

    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> Agent:
        """LoRA-train `agent` (from its current adapter, or fresh on the base) and save it to `out_dir`;
        `on_step` sees each optimizer step."""
        from mft.backends.hf.finetune import train_adapter, train_full

        cfg = settings or FinetuneSettings()
        if cfg.method == "full":
            start = (
                agent.adapter if agent.adapter is not None and is_full_model(Path(agent.adapter)) else None
            )
            model, _ = train_full(self, agent.name, start, examples, out_dir, cfg, on_step)
            if self.model is not self.base and agent.name in self.model.peft_config:
                self.model.delete_adapter(agent.name)
            self.full_models[agent.name] = model.to("cpu") if self.offload_full_models else model
        elif cfg.method == "lora":
            self.full_models.pop(agent.name, None)
            train_adapter(self, agent.name, agent.adapter, examples, out_dir, cfg, on_step)
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
