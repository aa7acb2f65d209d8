"""LoRA adapters merged into the shared base for one batch: the same outputs as the LoRA layers, faster.

A LoRA layer costs two extra small matrix products (and their dispatch) per linear layer and step; merged, a
batch of one adapter runs at the bare base's speed (1.3x on round 2 of 3 LoRA agents on a CPU,
docs/performance.md). `merged` replaces each adapted weight by a new tensor W + delta (peft's
`get_delta_weight`) for the duration of the batch and puts the original tensor back afterwards, untouched:
unlike peft's `merge_adapter`/`unmerge_adapter`, which add and subtract in place, nothing drifts however many
batches run (a resumed run samples exactly what an uninterrupted one does). Cost: one merged copy of the
adapted weights while the batch runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def lora_layers(model: Any, adapter: str) -> list[Any]:
    """The LoRA layers of `model` (a PeftModel) that hold `adapter`."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]


def mergeable(model: Any, adapter: str) -> bool:
    """Plain LoRA on linear layers (no variant such as DoRA): the adapter is exactly a weight delta."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    layers = lora_layers(model, adapter)
    return bool(layers) and all(
        isinstance(m, LoraLinear)
        and isinstance(m.get_base_layer(), torch.nn.Linear)
        and adapter not in getattr(m, "lora_variant", {})
        and not m.use_dora.get(adapter, False)
        for m in layers
    )


@contextlib.contextmanager
def merged(model: Any, adapter: str) -> Iterator[None]:
    """Context in which `model`'s base computes with `adapter` merged into its weights, adapters off."""
    import torch

    swapped: list[tuple[Any, Any]] = []
    try:
        with torch.no_grad():
            for layer in lora_layers(model, adapter):
                base = layer.get_base_layer()
                weight = base.weight
                delta = layer.get_delta_weight(adapter).to(weight.dtype)
                swapped.append((base, weight))
                base.weight = torch.nn.Parameter(weight + delta, requires_grad=False)
        with model.disable_adapter():
            yield
    finally:
        for base, weight in swapped:
            base.weight = weight
