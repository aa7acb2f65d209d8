"""Answer parsing shared by the dataset tasks: numbers, \\boxed{} spans, LaTeX equivalence, a timeout.

Everything here is pure text processing except `latex_equal`, which imports `math_verify` (and so sympy)
lazily on first use, so `import mft.tasks` stays light.

Numbers are compared exactly as fractions (`1,000` == `1000` == `1000.0`, `0.5` == `1/2` ==
`\\frac{1}{2}`); their canonical text (`format_number`) is an integer, a terminating decimal, or `p/q`.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any, TypeVar

from mft.errors import MftError

T = TypeVar("T")

# -- numbers -----------------------------------------------------------------------------------------------

# A sign only when the '-' cannot be a binary minus (so "10-5" gives 10 and 5, "= -5" gives -5).
_SIGN = r"(?:(?<![A-Za-z0-9_)\]}])-)?"
# not glued to a preceding ASCII letter/digit ("x2"); CJK or other scripts may touch a number ("共12个")
_UNSIGNED = r"(?<![A-Za-z0-9_.])(?:\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?:\.\d+)?|(?<![A-Za-z0-9_.])\.\d+"
_FRAC_ARG = r"-?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# \frac{a}{b}, \dfrac{a}{b}, \tfrac{a}{b}, \frac12 ; then a/b ; then a plain number.
_NUMBER = re.compile(
    rf"(?P<latex>{_SIGN}\\[dt]?frac\s*(?:\{{\s*(?P<ln>{_FRAC_ARG})\s*\}}|(?P<ln1>\d))"
    rf"\s*(?:\{{\s*(?P<ld>{_FRAC_ARG})\s*\}}|(?P<ld1>\d)))"
    rf"|(?P<slash>{_SIGN}(?:{_UNSIGNED})\s*/\s*(?:{_UNSIGNED}))"
    rf"|(?P<plain>{_SIGN}(?:{_UNSIGNED}))"
)
_WHOLE_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/(?:\d+(?:\.\d*)?|\.\d+))?")


def _fraction(text: str) -> Fraction | None:
    text = text.replace(",", "").replace(" ", "")
    if not _WHOLE_NUMBER.fullmatch(text):
        return None
    try:
        if "/" in text:
            num, den = text.split("/")
            d = Fraction(den)
            return None if d == 0 else Fraction(num) / d
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _match_value(m: re.Match[str]) -> Fraction | None:
    text = m.group(0)
    if m.group("latex") is not None:
        neg = text.lstrip().startswith("-")
        num = _fraction(m.group("ln") or m.group("ln1"))
        den = _fraction(m.group("ld") or m.group("ld1"))
        if num is None or den is None or den == 0:
            return None
        value = num / den
        return -value if neg else value
    return _fraction(text)


def find_numbers(text: str) -> list[Fraction]:
    """Every number written in `text`, in order: integers (with thousands commas), decimals, a/b, \\frac."""
    out = []
    for m in _NUMBER.finditer(text):
        value = _match_value(m)
        if value is not None:
            out.append(value)
    return out


# Wrappers that may surround a number without changing it: $, \$, \(, \), \text{...} units, %, bold.
_CURRENCY = re.compile(r"\\?\$|\\[()\[\]]|\*\*|\\[,;!]|\\(?:left|right)\b")
_TEXT_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\s*\{[^{}]*\}")


def parse_number(text: Any) -> Fraction | None:
    """`text` read as exactly one number (commas, sign, decimals, a/b, \\frac{a}{b}, $, %, units), else None.

    Unlike `find_numbers` this refuses text with two numbers or other words in it, so a gold answer like
    "5 or 6" is reported as unparseable rather than read as 5.
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(str(text)) if text == text and abs(text) != float("inf") else None
    if not isinstance(text, str):
        return None
    s = re.sub(r"(\d)(?:\{,\}|\\,)(\d{3})", r"\1,\2", text)  # 10{,}000 and 10\,000
    s = _TEXT_UNIT.sub(" ", s)
    s = _CURRENCY.sub(" ", s).replace("%", " ").strip().rstrip(".").strip()
    s = re.sub(r"^\{(.*)\}$", r"\1", s).strip()
    matches = list(_NUMBER.finditer(s))
    if len(matches) != 1:
        return None
    m = matches[0]
    rest = (s[: m.start()] + s[m.end() :]).strip()
    if rest:
        return None
    return _match_value(m)


def format_number(x: Fraction) -> str:
    """Canonical text: '1000', '-2.5', '1/3' (a decimal only when it terminates)."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{x.numerator}/{x.denominator}"
    with localcontext() as ctx:
        ctx.prec = 200
        text = format(Decimal(x.numerator) / Decimal(x.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def numbers_equal(a: Any, b: Any) -> bool:
    """Both read as one number (see `parse_number`) and the numbers are exactly equal."""
    na, nb = parse_number(a), parse_number(b)
    return na is not None and na == nb


# -- \boxed{} ----------------------------------------------------------------------------------------------

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] == '{' (nesting-aware), and the end index.

    A backslash escapes the next character, so `\\{`, `\\}` and the `\\\\` of a matrix row never count.
    """
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def boxed_spans(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...} / `\\boxed 5` in `text`, in order (unclosed: skipped)."""
    out = []
    for m in _BOX_CMD.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            got = _braced(text, i)
            if got is not None:
                out.append(got[0].strip())
        elif i > m.end():  # "\boxed 5": one token up to whitespace or '$'
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                out.append(token.group(0).rstrip(".,;"))
    return out


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed / \\fbox in `text` (nested braces matched), or None."""
    spans = boxed_spans(text)
    return spans[-1] if spans else None


_ANSWER_MARK = r"(?:final\s+answer|answer)\s*(?:is|=|:)"
# the rest of the line, up to the next 'answer is' on the same line
_ANSWER_IS = re.compile(
    rf"{_ANSWER_MARK}\s*:?\s*(?P<rest>(?:(?!{_ANSWER_MARK})[^\n])*)",
    re.IGNORECASE,
)


def answer_is_spans(text: str) -> list[str]:
    """What follows each 'answer is' / 'final answer:' / 'Answer =' up to the end of its line (or the next
    such phrase), in order."""
    return [m.group("rest").strip() for m in _ANSWER_IS.finditer(text)]


def strip_math_delimiters(s: str) -> str:
    """'$x$', '\\(x\\)', '\\[x\\]', '**x**', 'x.' -> 'x' (repeatedly)."""
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
            changed = True
    return s


def first_math_span(rest: str) -> str:
    """From the text after 'answer is': the first $...$ span if any, else up to the sentence end."""
    m = re.search(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)", rest)
    if m:
        return next(g for g in m.groups() if g is not None).strip()
    m = re.match(r"(.*?)(?:\.\s|\.$|$)", rest)
    return strip_math_delimiters(m.group(1) if m else rest)


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
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="mft-answer-timeout", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return default
    if "error" in box:
        raise box["error"]
    return box["value"]


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
        result = parse("\\boxed{" + answer + "}", parsing_timeout=None)  # type: ignore[arg-type]
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
