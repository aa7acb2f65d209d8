"""The agents' LoRA adapters in the shared model: loaded from disk, made active for a batch, merged into the
base's weights for one.

Merged: a LoRA layer costs two extra small matrix products (and their dispatch) per linear layer and step;
merged, a batch of one adapter runs at the bare base's speed (1.3x on round 2 of 3 LoRA agents on a CPU,
docs/performance.md). `merged` replaces each adapted weight by a new tensor W + delta (peft's
`get_delta_weight`) for the duration of the batch and puts the original tensor back afterwards, untouched:
unlike peft's `merge_adapter`/`unmerge_adapter`, which add and subtract in place, nothing drifts however many
batches run (a resumed run samples exactly what an uninterrupted one does). Cost: one merged copy of the
adapted weights while the batch runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mft.backends.hf.model import BASE_ADAPTER, LoadedModel
from mft.errors import MftError


def load_adapter(loaded: LoadedModel, name: str, adapter_dir: Path) -> None:
    """Load the LoRA adapter saved in `adapter_dir` into `loaded.model` as adapter `name`, in place of one
    by that name (the bare base becomes a PeftModel); a directory that holds none, or a damaged one, is an
    MftError naming the agent."""
    from peft import PeftModel

    if not (adapter_dir / "adapter_config.json").exists():
        raise MftError(
            f"agent {name!r}: {adapter_dir} is not a LoRA adapter (no adapter_config.json)",
            hint="re-run the finetune stage for this agent",
        )
    loaded.drop_adapter(name)
    try:
        if not loaded.has_adapters:
            loaded.model = PeftModel.from_pretrained(loaded.base, str(adapter_dir), adapter_name=name)
        else:
            loaded.model.load_adapter(str(adapter_dir), adapter_name=name)
    except Exception as exc:  # noqa: BLE001 - a corrupt adapter becomes one clear message
        raise MftError(
            f"agent {name!r}: could not load adapter {adapter_dir}: {str(exc).splitlines()[0]}",
            hint="delete that adapter directory and re-run its finetune",
        ) from exc
    loaded.model.eval()


def active(loaded: LoadedModel, adapter: str, merge: bool) -> contextlib.AbstractContextManager[Any]:
    """Context in which the shared model computes as `adapter` (`BASE_ADAPTER`: adapters disabled, the
    bare base); with `merge`, a mergeable adapter is merged into the base's weights for its duration."""
    if not loaded.has_adapters:
        return contextlib.nullcontext()
    if adapter == BASE_ADAPTER:
        cm: contextlib.AbstractContextManager[Any] = loaded.model.disable_adapter()
        return cm
    if merge and mergeable(loaded.model, adapter):
        return merged(loaded.model, adapter)
    loaded.model.set_adapter(adapter)
    return contextlib.nullcontext()


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
