"""Tasks, looked up by name in one lazy table, so `import mft.tasks` never imports a task's module.

Importing a task module can be costly (the dataset tasks pull in file readers, MATH needs math-verify at
construction), and the CLI and config validation only need the names; so each entry names "module:Class"
and the module is imported when the task is built or its settings are asked for.
"""

from __future__ import annotations

from typing import Any

from mft.registry import TASK_TABLE, LazyTable
from mft.tasks.base import Task

# The one list of task names (config choices, CLI choices, lookups), kept in the leaf `mft.registry` so the
# config reads it without importing this package.
TABLE: LazyTable[Task] = TASK_TABLE
TASKS = TABLE.names

__all__ = ["Task", "TABLE", "TASKS", "get_task", "task_settings"]


def task_settings(name: str) -> list[str]:
    """The settings (constructor keywords) task `name` accepts, e.g. ['data', 'strict', 'skip_bad_gold']."""
    return TABLE.settings(name)


def get_task(name: str, options: dict[str, Any] | None = None, **settings: Any) -> Task:
    """The task `name`, built with `options` (a config's `task_options`) and `settings` (e.g. data=PATH).

    None in `settings` means 'default' and is dropped, so that a config or CLI flag left unset never
    overrides a task's own default. `options` are written on purpose and passed as given: `levels: null`
    for MATH asks for every level, not for the default levels. A setting the task does not take is an
    MftError naming it, so a config cannot silently ignore one.
    """
    given = {**{k: v for k, v in settings.items() if v is not None}, **(options or {})}
    return TABLE.build(name, **given)
