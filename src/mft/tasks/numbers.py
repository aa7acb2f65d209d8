"""Numbers in answers: find them, read one exactly, write it canonically, compare; and `NumberAnswers`.

Numbers are compared exactly as fractions (`1,000` == `1000` == `1000.0`, `0.5` == `1/2` ==
`\\frac{1}{2}`); their canonical text (`format_number`) is an integer, a terminating decimal, or `p/q`.
Pure text processing: nothing heavy is imported.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from mft.tasks.base import BadGold
from mft.tasks.spans import answer_is_spans, boxed_spans

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


# -- scoring numeric answers -------------------------------------------------------------------------------

# A GSM8K solution's final line, "#### 1,234"; also accepted in responses (models imitate the format).
_HASHES = re.compile(r"^\s*####\s*(.*?)\s*$", re.MULTILINE)


class NumberAnswers:
    """Numeric gold parsing, extraction and equivalence: GSM8K's scoring, and the custom task's 'number' type.

    Extraction (`extract`), first hit wins:
      1. the last \\boxed{...}: the last number inside it;
      2. the last 'answer is' / 'answer:' phrase: the first number after it on its line;
      3. the last '#### N' line (GSM8K's own answer format);
      4. lenient only (strict=False, the default): the last number anywhere in the response.
    Equivalence is exact numeric equality: 1,000 == 1000 == 1000.0, 0.5 == 1/2 == \\frac{1}{2}.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def parse_gold(self, value: Any) -> str:
        """'...\\n#### 1,234' (or a bare number) -> '1234'; BadGold when it is not exactly one number."""
        if isinstance(value, str):
            hits = _HASHES.findall(value)
            text = hits[-1] if hits else value.strip()
            if not text:
                raise BadGold("empty answer" if not hits else "nothing after '####'")
        else:
            text = value
        number = parse_number(text)
        if number is None:
            if isinstance(value, str) and not _HASHES.search(value) and "\n" in value.strip():
                raise BadGold("no '#### <number>' line")
            raise BadGold("not a single number")
        return format_number(number)

    def extract(self, response: str) -> str | None:
        """The response's final number, canonical (see the class docstring for where it is looked for)."""
        for span in reversed(boxed_spans(response)):
            numbers = find_numbers(span)
            if numbers:
                return format_number(numbers[-1])
        for span in reversed(answer_is_spans(response)):
            numbers = find_numbers(span)
            if numbers:
                return format_number(numbers[0])
        for span in reversed(_HASHES.findall(response)):
            numbers = find_numbers(span)
            if numbers:
                return format_number(numbers[0])
        if self.strict:
            return None
        numbers = find_numbers(response)
        return format_number(numbers[-1]) if numbers else None

    @staticmethod
    def equal(a: str | None, b: str | None) -> bool:
        """Exact numeric equality; None, or text that is not exactly one number, is never equal."""
        return numbers_equal(a, b)  # parse_number strips and refuses None itself
