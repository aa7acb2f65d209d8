"""Backends, looked up by name and imported lazily (importing mft never imports torch/vllm/openai)."""

from __future__ import annotations

from typing import Any

from mft.backends.base import Agent, Backend, FinetuneSettings, GenerationRequest, Sampling
from mft.registry import BACKEND_TABLE, LazyTable

# The one list of backend names (config choices, CLI choices, lookups), kept in the leaf `mft.registry` so
# the config reads it without importing this package.
TABLE: LazyTable[Backend] = BACKEND_TABLE
BACKENDS = TABLE.names
# The backends `mft run` / `mft reproduce` accept: those that can finetune agents (all of them; vllm through
# the project's own trainer on the same base).
FINETUNING_BACKENDS = tuple(BACKENDS)
# The backends that finetune by DPO too (vllm through the hf trainer); the openai backend does SFT only.
PREFERENCE_BACKENDS = ("hf", "vllm")

__all__ = [
    "Agent",
    "Backend",
    "FinetuneSettings",
    "GenerationRequest",
    "Sampling",
    "get_backend",
    "backend_settings",
    "BACKENDS",
    "FINETUNING_BACKENDS",
    "PREFERENCE_BACKENDS",
]


def backend_settings(name: str) -> list[str]:
    """The settings (constructor keywords besides the model) backend `name` accepts."""
    return TABLE.settings(name)


def get_backend(name: str, model: str, **options: Any) -> Backend:
    """Backend `name` on base model `model`, built with its backend-specific `options`.

    An option the backend does not take is an MftError naming it (a typo never silently does nothing).
    """
    return TABLE.build(name, model, **options)
