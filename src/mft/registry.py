"""Lazy name -> class tables (tasks, backends): the one list of names that config, CLI and lookups share.

A table maps each name to "module:Class" and imports the module only when the class is asked for, so
`import mft.tasks` or `import mft.backends` never imports torch, datasets, vllm or openai. Building an entry
checks its settings against the class's constructor, so a misspelt setting is an error, never ignored.
"""

from __future__ import annotations

import importlib
import inspect
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
