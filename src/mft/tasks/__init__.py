"""Tasks, looked up by name. Task modules are imported lazily, so `import mft.tasks` stays light."""

from __future__ import annotations

import inspect
from typing import Any

from mft.errors import MftError
from mft.tasks.base import Task

TASKS = ("arithmetic", "gsm8k", "math", "custom")


def _task_class(name: str) -> type[Task]:
    if name == "arithmetic":
        from mft.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask
    if name == "gsm8k":
        from mft.tasks.gsm8k import GSM8KTask

        return GSM8KTask
    if name == "math":
        from mft.tasks.math_task import MathTask

        return MathTask
    if name == "custom":
        from mft.tasks.custom import CustomTask

        return CustomTask
    raise MftError(f"unknown task {name!r}", hint=f"choose one of: {', '.join(TASKS)}")


def task_settings(name: str) -> list[str]:
    """The settings (constructor keywords) task `name` accepts, e.g. ['data', 'strict', 'skip_bad_gold']."""
    params = inspect.signature(_task_class(name).__init__).parameters
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in params if p != "self" and params[p].kind not in variadic]


def get_task(name: str, **settings: Any) -> Task:
    """The task `name`, built with `settings` (e.g. data=PATH, strict=True); None values mean 'default'.

    A setting the task does not take is an MftError naming it, so a config cannot silently ignore one.
    """
    cls = _task_class(name)
    given = {k: v for k, v in settings.items() if v is not None}
    accepted = task_settings(name)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise MftError(
            f"task {name!r} has no setting {', '.join(repr(u) for u in unknown)}",
            hint=f"its settings are: {', '.join(accepted)}" if accepted else "it takes no settings",
        )
    return cls(**given)
