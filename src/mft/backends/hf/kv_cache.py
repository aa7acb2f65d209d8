"""A preallocated KV cache that attention reads only as far as it is filled (transformers' `Cache` API).

transformers' `StaticCache` allocates `prompt width + max_new_tokens` positions once and writes each step in
place, which beats the default dynamic cache (it grows by `torch.cat`, copying every layer's cache every
step), but every step's attention then reads all the allocated positions, the empty ones masked out. On a
CPU, decoding attention is bound by reading the cache, so that costs in proportion to the unused tail:
answers of 102 tokens under the arithmetic task's limit of 160 read 10-30% more than they need. This layer
keeps the static layer's preallocated tensors and in-place writes and hands attention (and the mask) only
the filled prefix, a view of them: the positions read are the ones a dynamic cache would hold, with no copy.
The computation is the same as the static cache's minus masked-out positions (tested: same tokens).

`prefill_in_chunks` fills such a cache for a whole batch by running the prompts through the model a few
rows at a time: on a CPU a prefill of 256 prompts of 400 tokens in one forward streams activations of
hundreds of MB through memory (2.5-3x slower than 8 rows at a time, whose activations stay in cache), while
decoding wants the whole batch in one step.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, StaticLayer


class FilledStaticLayer(StaticLayer):  # type: ignore[misc]  # transformers is unchecked (Any) here
    """`StaticLayer` whose `update` returns, and whose mask covers, only the positions written so far."""

    is_compileable = False  # the attended length changes every step (no fixed shapes for torch.compile)

    def __init__(self, max_cache_len: int, **kwargs: Any) -> None:
        super().__init__(max_cache_len=max_cache_len)
        self.filled = 0  # a Python int: no device sync to slice by it

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        super().update(key_states, value_states, *args, **kwargs)
        self.filled += key_states.shape[-2]
        return self.keys[:, :, : self.filled], self.values[:, :, : self.filled]

    def get_mask_sizes(self, query_length: Any, *args: Any) -> tuple[int, int]:
        # transformers < 5 passed the cache positions of the query instead of its length
        n = query_length.shape[0] if isinstance(query_length, torch.Tensor) else int(query_length)
        return self.filled + n, 0

    def get_seq_length(self, *args: Any) -> int:  # earlier transformers passed cache positions
        return self.filled

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self.filled -= abs(tokens_to_remove)

    def reset(self) -> None:
        super().reset()
        self.filled = 0

    def allocate(self, like: torch.Tensor, like_values: torch.Tensor, batch_size: int) -> None:
        """Allocate this layer's tensors for `batch_size` rows, heads, head sizes, dtype and device as in
        `like` / `like_values` (a smaller batch's keys and values)."""
        shape = (batch_size, like.shape[1], 0)
        self.lazy_initialization(
            like.new_empty(shape + like.shape[3:]), like_values.new_empty(shape + like_values.shape[3:])
        )

    def set_filled(self, n: int) -> None:
        """Declare the first `n` positions of every row written (by `prefill_in_chunks`)."""
        self.filled = n
        self.cumulative_length.fill_(n)


def supports_filled_cache(config: Any) -> bool:
    """Whether every layer of a model with this config is plain full attention (no sliding window, no
    linear-attention or state-space layers, not an encoder-decoder): the layers this cache is for."""
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return (
        not getattr(config, "is_encoder_decoder", False)
        and not getattr(config, "sliding_window", None)
        and set(layer_types) == {"full_attention"}
        and isinstance(getattr(config, "num_hidden_layers", None), int)
    )


def filled_cache(config: Any, max_cache_len: int) -> Cache:
    """One `FilledStaticLayer` of `max_cache_len` positions per decoder layer of a model with `config`."""
    return Cache(layers=[FilledStaticLayer(max_cache_len) for _ in range(config.num_hidden_layers)])


def generate_cache_kwarg() -> str:
    """The name `generate` takes a ready-made cache under (`cache` in current transformers, earlier
    `past_key_values`)."""
    import transformers.generation.utils as generation_utils

    return "cache" if "cache" in getattr(generation_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def prefill_in_chunks(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_cache_len: int,
    rows: int,
    **forward_kwargs: Any,
) -> Cache:
    """A `filled_cache` for the batch holding the keys and values of every position but the last of
    `input_ids` (left-padded, as for `generate`), computed `rows` sequences at a time.

    `generate(input_ids=..., attention_mask=..., cache=<this>)` then runs only the last prompt position
    and the new tokens. Positions are counted as `generate` counts them (from each row's first real token;
    padding at 1). `forward_kwargs` go to every forward (e.g. peft's `adapter_names`, per row: sliced).
    """
    from mft.backends.hf.model import accepts_logits_to_keep

    batch, width = input_ids.shape
    cache = filled_cache(model.config, max_cache_len)
    if width < 2:
        return cache
    if accepts_logits_to_keep(model):
        forward_kwargs = {"logits_to_keep": 1, **forward_kwargs}
    ids, mask = input_ids[:, :-1], attention_mask[:, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    for lo in range(0, batch, rows):
        hi = min(batch, lo + rows)
        part = filled_cache(model.config, max_cache_len)
        extra = {k: (v[lo:hi] if isinstance(v, list) else v) for k, v in forward_kwargs.items()}
        model(
            input_ids=ids[lo:hi],
            attention_mask=mask[lo:hi],
            position_ids=positions[lo:hi],
            use_cache=True,
            **{generate_cache_kwarg(): part},
            **extra,
        )
        for whole, piece in zip(cache.layers, part.layers, strict=True):
            if not whole.is_initialized:
                whole.allocate(piece.keys, piece.values, batch)
            whole.keys[lo:hi, :, : width - 1] = piece.keys[:, :, : width - 1]
            whole.values[lo:hi, :, : width - 1] = piece.values[:, :, : width - 1]
    for layer in cache.layers:
        layer.set_filled(width - 1)
    return cache


def cache_argument(
    model: Any, kwargs: dict[str, Any], implementation: str | None, prefill_tokens: int
) -> dict[str, Any]:
    """generate()'s KV-cache argument for the batch of `kwargs` (its input ids, mask and budget): our filled
    cache (prefilled in chunks of about `prefill_tokens` tokens when that is fewer rows than the batch),
    or transformers' `implementation` ("static", or None: dynamic) where the filled one does not apply."""
    cache = implementation
    if cache == "filled":
        config = model.config
        if supports_filled_cache(config):
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            max_len = ids.shape[1] + kwargs["max_new_tokens"]
            rows = max(1, prefill_tokens // ids.shape[1])
            if prefill_tokens and rows < ids.shape[0]:
                extra = {"adapter_names": kwargs["adapter_names"]} if "adapter_names" in kwargs else {}
                filled = prefill_in_chunks(model, ids, mask, max_len, rows, **extra)
            else:
                filled = filled_cache(config, max_len)
            return {generate_cache_kwarg(): filled}
        cache = "static"
    return {"cache_implementation": cache}
