"""How the hf backend generates a round: its requests grouped by what computes them, the groups cut into
batches of a size that fits, each batch's new tokens and sampling arguments; and the generation settings'
checks (`HFBackend`'s `batch_tokens`, `prefill_tokens`, `kv_cache`, `merge_adapters`, ...).

A fully finetuned agent has its own model. LoRA and base agents share one model; their requests are batched
per adapter with that adapter active (adapters off for base agents), or all together in peft's mixed-adapter
batches (`adapter_names=`, each row through its own adapter) when each agent has only a few requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mft.backends.base import GenerationRequest, Sampling
from mft.backends.hf.model import free_token_budget
from mft.errors import MftError

Group = tuple[str, str]  # ("model", agent): its own model; ("adapter", adapter); ("mixed", "")


def check_settings(
    batch_tokens: int | str,
    offload_full_models: str,
    prefill_tokens: int | str | None,
    kv_cache: str | None,
    merge_adapters: str | None,
    adapter_batching: str | None,
) -> None:
    """An MftError naming the first of the backend's generation settings that has no valid value (None:
    not given, the class default)."""
    if batch_tokens != "auto" and not (isinstance(batch_tokens, int) and batch_tokens > 0):
        raise MftError(f"batch_tokens must be auto or a whole number > 0, not {batch_tokens!r}")
    if offload_full_models not in ("auto", "on", "off"):
        raise MftError(f"offload_full_models must be auto, on or off, not {offload_full_models!r}")
    if prefill_tokens not in (None, "auto") and not (isinstance(prefill_tokens, int) and prefill_tokens >= 0):
        raise MftError(f"prefill_tokens must be auto or a whole number >= 0, not {prefill_tokens!r}")
    if kv_cache is not None and kv_cache not in ("filled", "static", "dynamic"):
        raise MftError(f"kv_cache must be filled, static or dynamic, not {kv_cache!r}")
    if merge_adapters is not None and merge_adapters not in ("auto", "on", "off"):
        raise MftError(f"merge_adapters must be auto, on or off, not {merge_adapters!r}")
    if adapter_batching is not None and adapter_batching not in ("auto", "per-adapter", "mixed"):
        raise MftError(f"adapter_batching must be auto, per-adapter or mixed, not {adapter_batching!r}")


def token_budget(batch_tokens: int | str, model: Any) -> int | None:
    """The most cached tokens a batch of `model` may hold (`batch_tokens`; auto: what fits on a GPU, no
    cap elsewhere)."""
    if batch_tokens == "auto":
        return free_token_budget(model) if model.device.type == "cuda" else None
    return int(batch_tokens)


def prefill_chunk_tokens(prefill_tokens: int | str, device: Any) -> int:
    """The tokens of a prefill chunk (`prefill_tokens`; auto: 2048 on a CPU, elsewhere 0: the whole batch
    in one forward)."""
    if prefill_tokens == "auto":
        return 2048 if device.type == "cpu" else 0
    return int(prefill_tokens)


class Interrupt:
    """A transformers stopping criterion that ends every row once `poll()` says so (and stays fired)."""

    def __init__(self, poll: Any) -> None:
        self.poll, self.fired = poll, False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.fired = self.fired or bool(self.poll())
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)


def group_requests(
    requests: list[GenerationRequest],
    adapters: list[str],
    full_models: dict[str, Any],
    mixed: Callable[[list[int]], bool],
) -> dict[Group, list[int]]:
    """The indices of `requests` by what computes them: an agent's own model (`full_models`), or the shared
    model with adapter `adapters[i]` active; all the shared model's requests in one ("mixed", "") group
    where `mixed(their group sizes)` says so."""
    groups: dict[Group, list[int]] = {}
    for i, r in enumerate(requests):
        key = ("model", r.agent) if r.agent in full_models else ("adapter", adapters[i])
        groups.setdefault(key, []).append(i)
    if mixed([len(v) for k, v in groups.items() if k[0] == "adapter"]):
        together = [i for k in sorted(groups) if k[0] == "adapter" for i in groups.pop(k)]
        groups[("mixed", "")] = together
    return groups


def mixed_batching(setting: str, has_adapters: bool, group_sizes: list[int], batch_size: int) -> bool:
    """Whether to batch requests of several adapters together (peft mixed-adapter batches); `setting` is
    the backend's `adapter_batching`, `group_sizes` the requests per adapter.

    Per adapter is faster for LoRA agents (measured on the bundled model on a CPU:
    benchmarks/adapter_batching.py, docs/performance.md), but the requests may need more batches,
    and a batch's fixed per-step cost is worth about 40 rows.
    So: per adapter, unless that needs more extra batches than the rows it saves (n/160); a handful
    of requests per agent (an interactive turn of `mft serve`, a tiny eval) stays mixed.
    """
    if setting != "auto" or not has_adapters or len(group_sizes) < 2:
        return setting == "mixed" and has_adapters
    n, bs = sum(group_sizes), batch_size
    extra = sum(-(-k // bs) for k in group_sizes) - -(-n // bs)
    return extra > n / 160


def new_tokens(asked: int, width: int, context: int | None, model_name: str, longest_agent: str) -> int:
    """`asked` new tokens, or as many as fit in the model's `context` after the batch's prompts (`width`
    tokens, padded); a prompt that leaves no room is an MftError naming its agent (`longest_agent`, whose
    prompt is the batch's longest)."""
    if context is None or width + asked <= context:
        return asked
    if width >= context:
        raise MftError(
            f"agent {longest_agent!r}: a prompt of {width} tokens does not fit in the context of model "
            f"{model_name!r} ({context} tokens)",
            hint="use fewer agents or rounds, summarize: true, shorter questions or a smaller "
            "max_new_tokens (shorter responses make shorter debate prompts)",
        )
    return context - width


def sampling_kwargs(sampling: Sampling) -> dict[str, Any]:
    """generate()'s sampling arguments: sampled at `temperature` with nucleus `top_p` (no top-k), or
    greedy."""
    if sampling.temperature > 0:
        return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
