"""A preallocated KV cache that attention reads only as far as it is filled (transformers' `Cache` API).

transformers' `StaticCache` allocates `prompt width + max_new_tokens` positions once and writes each step in
place, which beats the default dynamic cache (it grows by `torch.cat`, copying every layer's cache every
step), but every step's attention then reads all the allocated positions, the empty ones masked out. On a
CPU, decoding attention is bound by reading the cache, so that costs in proportion to the unused tail:
answers of 102 tokens under the arithmetic task's limit of 160 read 10-30% more than they need. This layer
keeps the static layer's preallocated tensors and in-place writes and hands attention (and the mask) only
the filled prefix, a view of them: the positions read are the ones a dynamic cache would hold, with no copy.
The computation is the same as the static cache's minus masked-out positions (tested: same tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, StaticLayer


class FilledStaticLayer(StaticLayer):
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
