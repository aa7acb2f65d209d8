"""Backends, looked up by name and imported lazily (importing mft never imports torch/vllm/openai)."""

from __future__ import annotations

import inspect
from typing import Any

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.errors import MftError

BACKENDS = ("hf", "openai", "vllm")

__all__ = ["Agent", "Backend", "GenerationRequest", "Sampling", "get_backend", "backend_settings", "BACKENDS"]


def _backend_class(name: str) -> type[Backend]:
    if name == "hf":
        from mft.backends.hf import HFBackend

        return HFBackend
    if name == "openai":
        from mft.backends.openai import OpenAIBackend

        return OpenAIBackend
    if name == "vllm":
        from mft.backends.vllm import VLLMBackend  # imports no vllm: its constructor does

        return VLLMBackend
    raise MftError(f"unknown backend {name!r}", hint=f"choose one of: {', '.join(BACKENDS)}")


def backend_settings(name: str) -> list[str]:
    """The settings (constructor keywords besides the model) backend `name` accepts."""
    params = inspect.signature(_backend_class(name).__init__).parameters
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in params if p not in ("self", "model") and params[p].kind not in variadic]


def get_backend(name: str, model: str, **options: Any) -> Backend:
    """Backend `name` on base model `model`, built with its backend-specific `options`.

    An option the backend does not take is an MftError naming it (a typo never silently does nothing).
    """
    cls = _backend_class(name)
    accepted = backend_settings(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MftError(
            f"backend {name!r} has no setting {', '.join(repr(u) for u in unknown)}",
            hint=f"its settings are: {', '.join(accepted)}",
        )
    return cls(model, **options)
