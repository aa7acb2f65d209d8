"""LaTeX final answers: extract one from a response, normalise it, and decide equivalence with math-verify.

Everything here is pure text processing except `latex_equal`, which imports `math_verify` (and so sympy)
lazily on first use, so `import mft.tasks` stays light. math-verify can hang on adversarial input and its
own timeout only works on the main thread, so every comparison runs under `call_with_timeout`.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from mft.errors import MftError
from mft.tasks.spans import answer_is_spans, first_math_span, last_boxed, strip_math_delimiters

T = TypeVar("T")


# -- extraction --------------------------------------------------------------------------------------------


def extract_latex_answer(response: str) -> str | None:
    """The final answer of a response: the last \\boxed{}, else the last 'answer is ...'; None if neither."""
    boxed = last_boxed(response)
    if boxed is not None:
        return strip_math_delimiters(boxed) or None
    spans = answer_is_spans(response)
    for span in reversed(spans):
        answer = first_math_span(span)
        if answer:
            return answer
    return None


# -- LaTeX normalisation (the fast path / fallback when math-verify cannot parse) --------------------------

_UNIT_WORDS = (
    "degrees|degree|units|unit|cm|centimeters|meters|meter|m|km|inches|inch|feet|foot|ft|mph|sq|square|"
    "dollars|dollar|cents|cent|hours|hour|minutes|minute|seconds|second|days|day"
)


def normalize_latex(s: str) -> str:
    """A string normalisation of a final answer, in the spirit of Hendrycks et al.'s `strip_string`.

    Equal outputs mean the same answer (up to units and presentation); different outputs mean nothing.
    """
    s = strip_math_delimiters(s.strip())
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    # a number followed by a unit in \text{...} or as a bare word: drop the unit
    s = re.sub(r"(\d)\s*\\(?:text|mbox|mathrm)\{\s*(?:" + _UNIT_WORDS + r")\s*\}", r"\1", s)
    s = re.sub(r"(\d)\s+(?:" + _UNIT_WORDS + r")\b\.?$", r"\1", s)
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s)  # "x = 3" -> "3"
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)(?=\{)", r"\\frac{\1}", s)  # \frac1{2}
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # ".5" -> "0.5"
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # thousands commas
    s = re.sub(r"(\d+\.\d*?)0+$", r"\1", s).rstrip(".") if re.fullmatch(r"-?\d+\.\d+", s) else s
    if re.fullmatch(r"-?\d+/\d+", s):
        num, den = s.split("/")
        s = f"\\frac{{{num}}}{{{den}}}"
    return s


# -- timeout -----------------------------------------------------------------------------------------------


class _Timeout(BaseException):
    """Raised by our SIGALRM handler; a BaseException so `except Exception` in sympy cannot swallow it."""


def call_with_timeout(fn: Callable[[], T], seconds: float | None, default: T) -> T:
    """`fn()`, or `default` if it takes longer than `seconds` (None or <= 0: no limit).

    On the main thread (POSIX) a SIGALRM interval timer interrupts the computation itself, so nothing is
    left running. Elsewhere (signals only reach the main thread) `fn` runs in a daemon worker thread that
    is abandoned on timeout: the caller gets `default` on time, the worker finishes or dies with the process.
    Exceptions raised by `fn` propagate.
    """
    if seconds is None or seconds <= 0:
        return fn()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _timeout_by_signal(fn, seconds, default)
    return _timeout_by_thread(fn, seconds, default)


def _timeout_by_signal(fn: Callable[[], T], seconds: float, default: T) -> T:
    def handler(signum: int, frame: Any) -> None:
        raise _Timeout

    old_handler = signal.signal(signal.SIGALRM, handler)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    except _Timeout:
        return default
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # someone else's timer was running: give it back what was left of it (roughly)
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - seconds, 0.001))


def _timeout_by_thread(fn: Callable[[], T], seconds: float, default: T) -> T:
    values: list[T] = []  # what the worker hands back: its one value, or its one exception
    errors: list[BaseException] = []

    def run() -> None:
        try:
            values.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="mft-answer-timeout", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return default
    if errors:
        raise errors[0]
    return values[0]


# -- LaTeX equivalence via math-verify ---------------------------------------------------------------------

_UNPARSED = object()
_PARSE_CACHE: dict[str, Any] = {}
_PARSE_CACHE_MAX = 50_000


def require_math_verify() -> None:
    """An MftError now (not mid-run) when math-verify is not installed; imports nothing."""
    import importlib.util

    if importlib.util.find_spec("math_verify") is None:
        raise MftError(
            "LaTeX answers are compared with the 'math-verify' package, which is not installed",
            hint='pip install "math-verify>=0.7,<1"',
        )


def _math_verify() -> tuple[Any, Any]:
    import math_verify.grader
    import math_verify.parser
    from math_verify import parse, verify

    # We always pass timeout=None to math-verify (its own SIGALRM timeout refuses to run off the main
    # thread) and enforce our own around the whole comparison; silence its one-off warning about that.
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return parse, verify


def _has_sympy(parsed: Any) -> bool:
    return isinstance(parsed, list) and any(not isinstance(x, str) for x in parsed)


def _parsed(answer: str) -> Any:
    """math-verify's parse of one final answer (cached), or _UNPARSED when it yields no expression."""
    hit = _PARSE_CACHE.get(answer)
    if hit is not None:
        return hit
    parse, _ = _math_verify()
    try:
        result = parse("\\boxed{" + answer + "}", parsing_timeout=None)
    except Exception:  # noqa: BLE001 - an unparseable answer is just not comparable symbolically
        result = []
    value = result if _has_sympy(result) else _UNPARSED
    if len(_PARSE_CACHE) >= _PARSE_CACHE_MAX:
        _PARSE_CACHE.clear()
    _PARSE_CACHE[answer] = value
    return value


def _symbolic_equal(a: str, b: str) -> bool | None:
    """math-verify's verdict with `b` as the reference; None when either side has no parsed expression."""
    pa, pb = _parsed(a), _parsed(b)
    if pa is _UNPARSED or pb is _UNPARSED:
        return None
    _, verify = _math_verify()
    try:
        return bool(verify(pb, pa, timeout_seconds=None))
    except Exception:  # noqa: BLE001
        return False


def latex_equal(a: str | None, b: str | None, timeout_s: float | None = 5.0) -> bool:
    """Whether final answers `a` and `b` (LaTeX, `b` the reference) are the same mathematical answer.

    Steps: identical after string normalisation -> True (no sympy needed); else math-verify parse + verify;
    if math-verify cannot parse a side, the string normalisation's verdict (False) stands. The whole
    comparison is bounded by `timeout_s`: on timeout the answers count as different.
    """
    if a is None or b is None:
        return False
    a, b = a.strip(), b.strip()
    if not a or not b:
        return False
    na, nb = normalize_latex(a), normalize_latex(b)
    if na and na == nb:
        return True

    def compare() -> bool:
        verdict = _symbolic_equal(a, b)
        return bool(verdict) if verdict is not None else False

    return call_with_timeout(compare, timeout_s, False)
