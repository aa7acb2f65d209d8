"""The hf backend (transformers + peft): one base model in memory, every agent a LoRA adapter on it."""

from __future__ import annotations

from mft.backends.hf.backend import HFBackend

__all__ = ["HFBackend"]
