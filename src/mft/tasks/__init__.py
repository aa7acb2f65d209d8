"""Tasks, looked up by name."""

from __future__ import annotations

from mft.errors import MftError
from mft.tasks.base import Task

TASKS = ("arithmetic",)


def get_task(name: str) -> Task:
    if name == "arithmetic":
        from mft.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask()
    raise MftError(f"unknown task {name!r}", hint=f"choose one of: {', '.join(TASKS)}")
