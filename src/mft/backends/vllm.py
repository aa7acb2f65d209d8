"""vLLM offline-engine backend: one base model on the GPU, every agent a LoRA adapter served by multi-LoRA.

The same path as the hf backend, on a faster engine: an agent is a name plus a LoRA adapter directory
(None: the bare base model); a round's requests are rendered with the tokenizer's chat template and
tokenized exactly as the hf backend tokenizes them (`encode(..., add_special_tokens=False)`, the template
already holds the BOS), then the whole round goes to vLLM in ONE `llm.generate` call with one
`SamplingParams` and one `LoRARequest` (None for base agents) per request. vLLM batches requests of
different adapters together (at most `max_loras` distinct adapters per step).

Seeds: each request gets its own `seed`, derived from the round's seed and the request's index
(`mft.backends.seeds.request_seed`, shared with the openai backend), so agents given the same prompt
sample different answers while a rerun samples exactly the same ones.

vLLM only generates: adapters are trained by the hf backend, and the directories it writes load here
unchanged. `import mft.backends.vllm` does not import vllm (or torch); the constructor does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mft.backends.base import (
    Agent,
    Backend,
    FinetuneSettings,
    GenerationRequest,
    Sampling,
    resolve_model_path,
)
from mft.backends.chat import ChatFormat
from mft.backends.seeds import request_seed
from mft.errors import MftError
from mft.records import Message

INSTALL_HINT = "pip install 'mft[vllm]' on a machine with a CUDA GPU, or use the hf backend"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _import_vllm() -> tuple[Any, Any, Any]:
    """(LLM, SamplingParams, LoRARequest), or one MftError saying what is missing and how to get it."""
    missing: list[str] = []
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        missing.append(f"the vllm package is not importable ({exc})")
        LLM = SamplingParams = LoRARequest = None  # noqa: N806 - the classes' own names
    if not _cuda_available():
        missing.append("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if missing:
        raise MftError("the vllm backend needs vllm and a CUDA GPU: " + "; ".join(missing), hint=INSTALL_HINT)
    return LLM, SamplingParams, LoRARequest


def _generation_config(path: str) -> Any:
    """The model's generation config (its end-of-turn ids), or None where it ships none."""
    try:
        from transformers import GenerationConfig

        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None


class VLLMBackend(Backend):
    name = "vllm"

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
    ) -> None:
        """`dtype="auto"` is bfloat16, as the hf backend on a GPU. `batch_size` (the hf setting) is accepted
        so callers can pass it uniformly, and unused: vLLM schedules its own batches."""
        super().__init__()
        LLM, self._SamplingParams, self._LoRARequest = _import_vllm()  # noqa: N806
        self.model_name = model
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.enable_lora = enable_lora
        self.dtype = "bfloat16" if dtype == "auto" else dtype
        self.batch_size = batch_size
        path = resolve_model_path(model)
        kwargs: dict[str, Any] = {
            "model": path,
            "dtype": self.dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "enable_lora": enable_lora,
        }
        if enable_lora:
            kwargs.update(max_loras=max_loras, max_lora_rank=max_lora_rank)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - engine start-up failures become one clear message
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MftError(
                f"vllm could not load model {path!r}: {first}",
                hint="check the path or hub id, and lower gpu_memory_utilization if the GPU is shared",
            ) from exc
        self.tokenizer = self.llm.get_tokenizer()
        # the same chat format as the hf backend: prompts, every stop id, template options, pinned date
        self.chat = ChatFormat(self.tokenizer, _generation_config(path), chat_template_kwargs)
        self.agents: dict[str, Agent] = {}
        self._lora: dict[str, Any] = {}  # agent name -> its LoRARequest (absent: base agent)
        self.lora_ids: dict[str, int] = {}  # agent name -> the id of its LoRARequest
        self._next_lora_id = 1  # vLLM's LoRA ids are positive ints; 0 would mean "no adapter"

    # -- agents --------------------------------------------------------------------------------------------
    def add_agent(self, agent: Agent) -> None:
        """Register `agent`. Its LoRARequest gets the next integer id (1, 2, ... in order of registration);
        re-adding the same agent keeps it, and re-adding a name with a different adapter (a finetuned
        agent) gets a fresh id, since vLLM caches adapter weights by id."""
        if self.agents.get(agent.name) == agent:
            return
        if agent.adapter is None:
            self._lora.pop(agent.name, None)
            self.lora_ids.pop(agent.name, None)
        else:
            if not self.enable_lora:
                raise MftError(
                    f"agent {agent.name!r} has an adapter but this vllm backend was built with "
                    "enable_lora=False",
                    hint="build it with enable_lora=True",
                )
            adapter_dir = Path(agent.adapter)
            config_file = adapter_dir / "adapter_config.json"
            if not config_file.exists():
                raise MftError(
                    f"agent {agent.name!r}: {adapter_dir} is not a LoRA adapter (no adapter_config.json)",
                    hint="re-run the finetune stage for this agent",
                )
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
            self.lora_ids[agent.name] = self._next_lora_id
            self._lora[agent.name] = self._LoRARequest(agent.name, self._next_lora_id, str(adapter_dir))
            self._next_lora_id += 1
        self.agents[agent.name] = agent

    def lora_request(self, name: str) -> Any:
        """The LoRARequest requests of agent `name` are generated with (None: the base model)."""
        if name not in self.agents:
            raise MftError(f"unknown agent {name!r}", hint="add it to the society first")
        return self._lora.get(name)

    # -- generation ----------------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        return self.chat.prompt(request.messages)

    def sampling_params(self, sampling: Sampling, index: int) -> Any:
        """The SamplingParams of request `index` of a round sampled with `sampling`."""
        greedy = sampling.temperature <= 0
        return self._SamplingParams(
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=list(self.chat.stop_ids),  # every end-of-turn token; not part of the text
            seed=request_seed(sampling.seed, index),
        )

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
        params = [self.sampling_params(sampling, i) for i in range(len(requests))]
        kwargs: dict[str, Any] = {"use_tqdm": False}
        if self.enable_lora:
            kwargs["lora_request"] = loras
        results = self.llm.generate(prompts, params, **kwargs)
        if len(results) != len(requests):
            raise MftError(f"vllm returned {len(results)} outputs for {len(requests)} requests")
        outputs: list[str] = []
        per = self.stats.per_agent_completion_tokens
        for r, prompt, result in zip(requests, prompts, results, strict=True):
            completion = result.outputs[0]
            outputs.append(completion.text.strip())
            n_new = len(completion.token_ids)
            prompt_ids = getattr(result, "prompt_token_ids", None)
            self.stats.prompt_tokens += len(
                prompt_ids if prompt_ids is not None else prompt["prompt_token_ids"]
            )
            self.stats.completion_tokens += n_new
            per[r.agent] = per.get(r.agent, 0) + n_new
        self.stats.requests += len(requests)
        self.stats.seconds += time.time() - start
        return outputs

    def finetune(
        self,
        agent: Agent,
        examples: list[list[Message]],
        out_dir: Path,
        settings: FinetuneSettings | None = None,
    ) -> Agent:
        raise MftError(
            "the vllm backend serves adapters, it does not finetune them",
            hint="finetune on the hf backend; the adapter directories it writes load here unchanged",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "dtype": self.dtype,
            "max_loras": self.max_loras,
            "max_lora_rank": self.max_lora_rank,
            "lora_ids": dict(self.lora_ids),
        }
