"""transformers + peft backend: one base model in memory, every agent a LoRA adapter on it.

Generation packs all requests of a round -- across agents and problems -- into left-padded batches of at
most `batch_size` sequences and generates them with the KV cache. Requests for different agents share a
batch: peft's mixed-adapter inference (`adapter_names=`) routes each row through its own adapter, and
`__base__` rows through the bare base model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.errors import MftError
from mft.records import Message
from mft.toy import resolve_model_path

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed-batch inference


def load_base(model: str, device: str | None = None, dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local directory or a hub id (`from_pretrained`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard loading bars; our own progress bars say what matters

    path = resolve_model_path(model)
    local = Path(path)
    if (local.exists() or path.startswith(("/", "./", "../"))) and not (local / "config.json").exists():
        raise MftError(
            f"model path {path!r} has no config.json",
            hint="point `model` at a directory written by save_pretrained, a hub id, or 'bundled'",
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as exc:
        raise MftError(
            f"could not load model {path!r}: {str(exc).splitlines()[0]}",
            hint="check the path or hub id; offline machines need a local directory",
        ) from exc
    if tok.chat_template is None:
        raise MftError(
            f"model {path!r} has no chat template", hint="use an instruction-tuned model or add one"
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    lm.to(device)
    lm.eval()
    return lm, tok


def _is_full_model(path: Path) -> bool:
    """A saved full model (config.json + weights), as opposed to a LoRA adapter directory."""
    return (path / "config.json").exists() and not (path / "adapter_config.json").exists()


class HFBackend(Backend):
    name = "hf"

    def __init__(
        self, model: str = "bundled", batch_size: int = 256, device: str | None = None, dtype: str = "auto"
    ) -> None:
        super().__init__()
        self.model_name = model
        self.batch_size = batch_size
        self.base, self.tokenizer = load_base(model, device=device, dtype=dtype)
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
        if agent.adapter is not None and _is_full_model(Path(agent.adapter)):
            # a fully finetuned agent (`method: full`): its own model, generated separately
            from transformers import AutoModelForCausalLM

            if self.model is not self.base and agent.name in self.model.peft_config:
                self.model.delete_adapter(agent.name)
            full = AutoModelForCausalLM.from_pretrained(agent.adapter, dtype=self.base.dtype).to(self.device)
            self.full_models[agent.name] = full.eval()
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

    def _adapter_of(self, name: str) -> str:
        if name not in self.agents:
            raise MftError(f"unknown agent {name!r}", hint="add it to the society first")
        return BASE_ADAPTER if self.agents[name].adapter is None else name

    # -- generation ----------------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        return self.tokenizer.apply_chat_template(
            [m.model_dump() for m in request.messages], add_generation_prompt=True, tokenize=False
        )

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        import torch

        if not requests:
            return []
        start = time.time()
        prompts = [self.render(r) for r in requests]
        encoded = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        adapters = [self._adapter_of(r.agent) for r in requests]
        outputs: list[str] = [""] * len(requests)
        pad = self.tokenizer.pad_token_id
        # LoRA and base agents share one model (mixed-adapter batches); a fully finetuned agent has its own.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.agent if r.agent in self.full_models else "", []).append(i)
        b = 0
        for key in sorted(groups):
            model = self.full_models[key] if key else self.model
            # Sort by length so each batch pads little; results are put back in request order.
            order = sorted(groups[key], key=lambda i: (len(encoded[i]), i))
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo : lo + self.batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                    mask[row, width - len(encoded[i]) :] = 1
                kwargs: dict[str, Any] = {
                    "input_ids": ids.to(self.device),
                    "attention_mask": mask.to(self.device),
                    "max_new_tokens": sampling.max_new_tokens,
                    "pad_token_id": pad,
                    "eos_token_id": self.tokenizer.eos_token_id,
                }
                if sampling.temperature > 0:
                    kwargs.update(
                        do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0
                    )
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                if not key and self.model is not self.base:
                    kwargs["adapter_names"] = [adapters[i] for i in idx]
                torch.manual_seed(sampling.seed * 1_000_003 + b)
                b += 1
                with torch.inference_mode():
                    out = model.generate(**kwargs)
                new = out[:, width:]
                texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                for row, i in enumerate(idx):
                    outputs[i] = texts[row].strip()
                    n_new = int((new[row] != pad).sum())
                    self.stats.completion_tokens += n_new
                    per = self.stats.per_agent_completion_tokens
                    per[requests[i].agent] = per.get(requests[i].agent, 0) + n_new
                    self.stats.prompt_tokens += len(encoded[i])
        self.stats.requests += len(requests)
        self.stats.seconds += time.time() - start
        return outputs

    def finetune(self, agent: Agent, examples: list[list[Message]], out_dir: Path, **settings: Any) -> Agent:
        """LoRA-train `agent` (from its current adapter, or fresh on the base) and save it to `out_dir`."""
        from mft.finetune import LoraSettings, train_adapter, train_full

        cfg = LoraSettings(**settings)
        if cfg.method == "full":
            start = (
                agent.adapter if agent.adapter is not None and _is_full_model(Path(agent.adapter)) else None
            )
            model, _ = train_full(self, agent.name, start, examples, out_dir, cfg)
            if self.model is not self.base and agent.name in self.model.peft_config:
                self.model.delete_adapter(agent.name)
            self.full_models[agent.name] = model
        elif cfg.method == "lora":
            self.full_models.pop(agent.name, None)
            train_adapter(self, agent.name, agent.adapter, examples, out_dir, cfg)
        else:
            raise MftError(f"unknown finetuning method {cfg.method!r}", hint="use 'lora' or 'full'")
        trained = Agent(agent.name, str(out_dir))
        self.agents[agent.name] = trained  # the in-memory model/adapter already holds the saved weights
        return trained

    def finished_agent(self, name: str, out_dir: Path) -> Agent | None:
        """Agent `name` on the adapter `finetune` saved in `out_dir`, or None if it saved none there."""
        out_dir = Path(out_dir)
        done = (out_dir / "adapter_model.safetensors").exists() or _is_full_model(out_dir)
        return Agent(name, str(out_dir)) if done else None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "batch_size": self.batch_size}
