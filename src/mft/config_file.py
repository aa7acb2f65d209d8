"""Reading a config: a YAML file (optional) plus command-line overrides, validated into a config class, with
one line naming the file and each bad field (`ConfigError`) instead of a traceback, and a renamed setting
answered with its new name and value. Generic over the config class (`mft.config` holds them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mft.errors import MftError


class ConfigError(MftError):
    pass


C = TypeVar("C", bound=BaseModel)


def format_validation_error(exc: ValidationError, source: str, fields: list[str] | None = None) -> str:
    """One line naming each bad field; an unknown one gets the closest of `fields` as a suggestion."""
    import difflib

    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(field, fields or [], n=1, cutoff=0.75)
            msg = (
                f"unknown setting (did you mean '{close[0]}'?)"
                if close
                else "unknown setting (check its spelling)"
            )
        parts.append(f"field '{field}': {msg}")
    return f"{source}: " + "; ".join(parts)


def load_config(cls: type[C], path: Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """YAML file (optional) + overrides -> validated config, or a ConfigError naming file and field."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        data.update(loaded)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        data.update(given)
        if path is not None:
            source = f"{path} + command line"
    check_renamed(data, source)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, list(cls.model_fields))) from None


def check_renamed(data: dict[str, Any], source: str) -> None:
    """A setting that was renamed (its old name read the other way round) is one line with its new value."""
    if "critic_positive_fraction" in data:
        old = data["critic_positive_fraction"]
        new = f"{1 - old:g}" if isinstance(old, int | float) and 0 <= old <= 1 else "1 - its value"
        raise ConfigError(
            f"{source}: field 'critic_positive_fraction' (the share of D_C+) is now critic_corrected_share, "
            f"the share of D_C- (the paper's w): write critic_corrected_share: {new}"
        )
