"""Where a response (or a gold solution) writes its final answer: \\boxed{} spans, 'answer is' phrases, $...$.

Pure text, no answer semantics: the number parser (`numbers`), the LaTeX comparison (`latex`) and the custom
task all locate answers with these, so a box or an 'answer is' phrase is found the same way by every task.
"""

from __future__ import annotations

import re

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


def normalize_text(s: str) -> str:
    """Text compared as an answer (the custom task's exact strings, a multiple-choice option's text): unwrap
    \\text{}, drop quotes/markdown/end punctuation, casefold, one space."""
    s = strip_math_delimiters(s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.strip().strip("\"'`*_").strip()
    s = s.rstrip(".!?;:,").strip()
    return re.sub(r"\s+", " ", s).casefold()
