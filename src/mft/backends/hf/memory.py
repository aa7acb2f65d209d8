"""Peak memory of a run on the hf backend, worked out before any weight is loaded (`mft run --dry-run`).

Everything is counted from the model's config (`AutoConfig`; the parameters are counted on the meta
device, so nothing is allocated) and the run's settings, the way one works it out on paper:

- weights: parameters x bytes per parameter (bfloat16 on a GPU, float32 on a CPU, or `dtype`);
- LoRA agents: 2N adapters of r x (in + out) parameters per adapted linear layer; training one adds its
  gradients and AdamW's two moments; full finetuning adds them for every parameter, plus the trained copy;
- activations of one micro-batch: without checkpointing every layer keeps about 10 x hidden + 4 x
  intermediate values per token; with checkpointing only each layer's input is kept, plus one layer's
  activations during its recompute;
- the loss: logits at the trained positions (model dtype) plus one fp32 chunk of the cross-entropy;
- generation: the KV cache of one batch, rows x (longest prompt + max_new_tokens) x 2 x layers x kv heads
  x head dim x bytes.

The longest prompt and the longest training example are estimated from the debate's shape (a critic sees
every agent's earlier answers) with 256 tokens for the question, unless `ft_max_length` caps the latter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mft.backends.hf.model import kv_bytes_per_token
from mft.backends.hf.train import LOSS_CHUNK_ROWS
from mft.backends.hub import loadable
from mft.errors import MftError

QUESTION_TOKENS = 256
GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """The inputs of the estimate (a run config's, or given directly)."""

    model: str
    agents: int
    rounds: int
    max_new_tokens: int
    batch_size: int  # generation rows
    lora_rank: int = 8
    ft_method: str = "lora"
    ft_batch_size: int = 16
    ft_micro_batch_size: int | None = None
    ft_max_length: int | None = None
    gradient_checkpointing: bool = False
    dtype_bytes: int | None = None  # None: 2 on a GPU (bfloat16), 4 on a CPU
    gpu: bool = True


def _counts(model: str) -> tuple[Any, int, int]:
    """The config, the number of parameters, and the inputs + outputs summed over the linear layers a
    LoRA `all-linear` adapter adapts (every nn.Linear but the output head)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(loadable(model))
    except OSError as exc:
        raise MftError(f"could not read the config of model {model!r}: {str(exc).splitlines()[0]}") from exc
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in lm.parameters())
    head = lm.get_output_embeddings()
    linear_sides = sum(
        m.in_features + m.out_features
        for m in lm.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    )
    return config, params, linear_sides


def estimate(plan: MemoryPlan) -> dict[str, float]:
    """Bytes of each part at its peak; 'peak' is the most the run holds at once (training and generation
    do not overlap)."""
    config, params, linear_sides = _counts(plan.model)
    b = plan.dtype_bytes or (2 if plan.gpu else 4)
    hidden = int(config.hidden_size)
    layers = int(config.num_hidden_layers)
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    vocab = int(config.vocab_size)
    weights = params * b
    lora_params = plan.lora_rank * linear_sides
    adapters = 2 * plan.agents * lora_params * b if plan.ft_method == "lora" else 0
    if plan.ft_method == "lora":
        optimizer = lora_params * b * 3  # gradients + AdamW's two moments, for the one agent in training
        trained_copy = 0
    else:
        optimizer = params * b * 3
        trained_copy = weights
    longest_prompt = QUESTION_TOKENS + plan.agents * plan.max_new_tokens
    example = (
        QUESTION_TOKENS
        + plan.rounds * plan.max_new_tokens
        + (plan.rounds - 1) * (plan.agents - 1) * (plan.max_new_tokens)
    )
    length = min(example, plan.ft_max_length or example)
    micro = min(plan.ft_micro_batch_size or plan.ft_batch_size, plan.ft_batch_size)
    tokens = micro * length
    per_layer_token = (10 * hidden + 4 * inter) * b
    if plan.gradient_checkpointing:
        activations = tokens * (layers * hidden * b + per_layer_token)
    else:
        activations = tokens * layers * per_layer_token
    loss = tokens * vocab * b + min(tokens, LOSS_CHUNK_ROWS) * vocab * 4 * 2
    kv = plan.batch_size * (longest_prompt + plan.max_new_tokens) * kv_bytes_per_token(config, b)
    training = weights + adapters + optimizer + trained_copy + activations + loss
    generation = weights + adapters + kv + 2 * plan.batch_size * vocab * 4  # + the step's logits
    return {
        "weights": weights,
        "LoRA adapters (2N)": adapters,
        "gradients + AdamW states": optimizer,
        "trained full copy": trained_copy,
        "activations (one micro-batch)": activations,
        "loss (logits)": loss,
        "KV cache (one generation batch)": kv,
        "peak while training": training,
        "peak while generating": generation,
        "peak": max(training, generation),
    }


def describe(parts: dict[str, float]) -> list[str]:
    """Lines for people: each part in GiB."""
    return [f"{name:<34} {value / GIB:8.2f} GiB" for name, value in parts.items()]
