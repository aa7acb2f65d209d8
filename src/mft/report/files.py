"""Reading a saved JSON file for the report: one MftError naming the file and the field when it is missing,
not valid JSON, or a field is not what the report needs (`load.py` says which fields each file must have).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeGuard

from mft.errors import MftError
from mft.eval.metrics import Estimate


def read_json(path: Path, hint: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MftError(f"{path} is missing", hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MftError(f"{path} cannot be read ({exc})", hint=hint) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MftError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", hint=hint
        ) from None


def is_number(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def short(x: Any) -> str:
    text = json.dumps(x)
    return text if len(text) <= 60 else text[:57] + "..."


def as_object(obj: Any, path: Path, where: str, hint: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MftError(f"{path}: {where} must be a JSON object, not {short(obj)}", hint=hint)
    return obj


def as_estimate(obj: Any, path: Path, where: str, hint: str) -> Estimate:
    """{"mean", "se", "n"}: mean a finite number; se a number, or null / NaN when it is undefined (n = 1)."""
    if not isinstance(obj, dict):
        raise MftError(f"{path}: field '{where}' is missing or not an object with 'mean' and 'se'", hint=hint)
    for key in ("mean", "se"):
        if key not in obj:
            raise MftError(f"{path}: field '{where}.{key}' is missing", hint=hint)
    mean, se = obj["mean"], obj["se"]
    if not is_number(mean):
        raise MftError(f"{path}: field '{where}.mean' is {short(mean)}, not a number", hint=hint)
    if se is not None and not (
        isinstance(se, int | float) and not isinstance(se, bool) and not math.isinf(se)
    ):
        raise MftError(f"{path}: field '{where}.se' is {short(se)}, not a number", hint=hint)
    n = obj.get("n")
    return Estimate(float(mean), math.nan if se is None else float(se), int(n) if is_number(n) else None)
