"""Errors meant for people: one line saying what and where, plus how to fix it."""

from __future__ import annotations


class MftError(Exception):
    """An error the CLI prints as one line (no traceback unless --debug) and exits non-zero."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}" + (f" (fix: {self.hint})" if self.hint else "")
