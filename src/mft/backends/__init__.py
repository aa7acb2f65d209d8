"""Backends, looked up by name and imported lazily (importing mft never imports torch/vllm/openai).

What a backend can do is declared on its class (`Backend`'s capabilities: `objectives`, `mixes_bases`,
`ray_trainer`, `scores_responses`, `loads_adapters`, `estimates_memory`, and the `engine_options` hook), so
callers ask the class (`backend_class(name)`, `backends_where(test)`) instead of testing names. Adding a
backend is its module plus one line in the table (`mft.registry.BACKEND_TABLE`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mft.backends.base import Agent, Backend, EngineShape, FinetuneSettings, GenerationRequest, Sampling
from mft.registry import BACKEND_TABLE, LazyTable

# The one list of backend names (config choices, CLI choices, lookups), kept in the leaf `mft.registry` so
# the config reads it without importing this package.
TABLE: LazyTable[Backend] = BACKEND_TABLE
BACKENDS = TABLE.names

__all__ = [
    "Agent",
    "Backend",
    "EngineShape",
    "FinetuneSettings",
    "GenerationRequest",
    "Sampling",
    "get_backend",
    "backend_class",
    "backend_settings",
    "backends_where",
    "training",
    "BACKENDS",
    "TABLE",
]


def backend_class(name: str) -> type[Backend]:
    """The class registered as backend `name` (its capabilities are class attributes): its module is
    imported, the backend is not built, and no torch, vllm or openai is imported."""
    return TABLE.load(name)


def backends_where(test: Callable[[type[Backend]], bool]) -> tuple[str, ...]:
    """The names of the backends whose class passes `test`, in table order, e.g.
    `backends_where(lambda b: "dpo" in b.objectives)`."""
    return TABLE.where(test)


def training(objective: str) -> tuple[str, ...]:
    """The names of the backends that train by `objective` (its key in `mft.objectives`: their class's
    `objectives` has it), in table order."""
    return backends_where(lambda b: objective in b.objectives)


def backend_settings(name: str) -> list[str]:
    """The settings (constructor keywords besides the model) backend `name` accepts."""
    return TABLE.settings(name)


def get_backend(name: str, model: str, **options: Any) -> Backend:
    """Backend `name` on base model `model`, built with its backend-specific `options`.

    An option the backend does not take is an MftError naming it (a typo never silently does nothing).
    """
    return TABLE.build(name, model, **options)
