"""Lazy name -> class tables (tasks, backends): the one list of names that config, CLI and lookups share.

A table maps each name to "module:Class" and imports the module only when the class is asked for, so
`import mft.tasks` or `import mft.backends` never imports torch, datasets, vllm or openai. Building an entry
checks its settings against the class's constructor, so a misspelt setting is an error, never ignored.

The two tables live here, in a leaf module, so that the config offers their names as choices (and reads a
backend's capabilities by name) without importing `mft.tasks` or `mft.backends`, which re-export them.
Adding a task or a backend is its module plus one line here.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from mft.errors import MftError

T = TypeVar("T")


class LazyTable(Generic[T]):
    """`kind` names what the entries are ('task', 'backend'); `positional` are constructor arguments that
    are not settings (e.g. a backend's `model`)."""

    def __init__(self, kind: str, entries: dict[str, str], positional: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.entries = dict(entries)
        self.positional = positional

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def load(self, name: str) -> type[T]:
        """The class registered as `name` (its module imported now); an MftError for an unknown name."""
        if name not in self.entries:
            raise MftError(f"unknown {self.kind} {name!r}", hint=f"choose one of: {', '.join(self.names)}")
        module, _, cls = self.entries[name].partition(":")
        loaded: type[T] = getattr(importlib.import_module(module), cls)
        return loaded

    def where(self, test: Callable[[type[T]], bool]) -> tuple[str, ...]:
        """The names whose class passes `test` (e.g. a capability it declares), in table order; every
        entry's module is imported."""
        return tuple(name for name in self.entries if test(self.load(name)))

    def settings(self, name: str) -> list[str]:
        """The settings (constructor keywords besides the positional ones) entry `name` accepts."""
        params = inspect.signature(self.load(name).__init__).parameters
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        skip = {"self", *self.positional}
        return [p for p in params if p not in skip and params[p].kind not in variadic]

    def build(self, name: str, *args: Any, **settings: Any) -> T:
        """Entry `name` built with `settings`; a setting it does not take is an MftError naming it."""
        cls = self.load(name)
        accepted = self.settings(name)
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise MftError(
                f"{self.kind} {name!r} has no setting {', '.join(repr(u) for u in unknown)}",
                hint=f"its settings are: {', '.join(accepted)}" if accepted else "it takes no settings",
            )
        return cls(*args, **settings)


# The one list of task names (config choices, CLI choices, lookups); `mft.tasks.TABLE` is this table.
TASK_TABLE: LazyTable[Any] = LazyTable(
    "task",
    {
        "arithmetic": "mft.tasks.arithmetic:ArithmeticTask",
        "gsm8k": "mft.tasks.gsm8k:GSM8KTask",
        "math": "mft.tasks.math_task:MathTask",
        "mmlu": "mft.tasks.mmlu:MMLUTask",
        "custom": "mft.tasks.custom:CustomTask",
    },
)

# The one list of backend names; `mft.backends.TABLE` is this table. What a backend can do (objectives,
# mixed societies, scoring, ...) is declared on its class (`mft.backends.base.Backend`), not here.
BACKEND_TABLE: LazyTable[Any] = LazyTable(
    "backend",
    {
        "hf": "mft.backends.hf:HFBackend",
        "openai": "mft.backends.openai:OpenAIBackend",
        "vllm": "mft.backends.vllm:VLLMBackend",  # imports no vllm: its constructor does
    },
    positional=("model",),
)
