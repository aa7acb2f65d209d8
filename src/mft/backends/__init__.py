"""Backends, looked up by name and imported lazily (importing mft never imports torch/vllm/openai)."""

from __future__ import annotations

from typing import Any

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.errors import MftError

BACKENDS = ("hf",)

__all__ = ["Agent", "Backend", "GenerationRequest", "Sampling", "get_backend", "BACKENDS"]


def get_backend(name: str, model: str, **options: Any) -> Backend:
    if name == "hf":
        from mft.backends.hf import HFBackend

        return HFBackend(model, **options)
    raise MftError(f"unknown backend {name!r}", hint=f"choose one of: {', '.join(BACKENDS)}")
