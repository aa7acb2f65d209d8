"""Multiple-choice answers: the letter a response commits to, read from what models really write.

`ChoiceAnswers(letters).extract(response, choices)` reads, strongest evidence first, and within a kind of
evidence the last occurrence (a model that changes its mind ends on its final answer):
1. an answer statement: "the answer is (B)", "Answer: B", "final answer: **b**", "the answer is B. Paris";
2. a boxed letter: \\boxed{B};
3. a letter in parentheses: "(B)";
4. a line that starts with the letter: "B) Paris", "B. Paris", "**B**", "B" alone;
5. the last line's letter: "Option B is correct.";
6. no letter anywhere: the last line (or the answer statement) is one choice's text ("Paris").
A lowercase letter counts only where it cannot be a word ("the answer is b." yes, "the answer is a number"
no). The unit that decides (the statement, the line) naming two different letters ("(A) or (C)") is
ambiguous: no answer, which scores as wrong, as does a response with no answer at all. An explanation after
the answer that mentions other letters without committing to them ("B) Paris; A and C are rivers") leaves
the answer alone. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import Any

from mft.tasks.base import BadGold
from mft.tasks.spans import answer_is_spans, boxed_spans, normalize_text

_CLAUSE = re.compile(r"[.;,!?]\s+|\b(?:so|therefore|thus|hence)\b", re.IGNORECASE)


class ChoiceAnswers:
    """The letters of a multiple-choice task (A, B, C, D by default) and how an answer is read."""

    def __init__(self, letters: str = "ABCD") -> None:
        self.letters = "".join(dict.fromkeys(c.upper() for c in letters if c.isalpha()))
        if not self.letters:
            raise ValueError(f"no letters in {letters!r}")
        up = re.escape(self.letters)
        low = up.lower()
        # a committed letter: in parentheses or bold, or standing alone (uppercase), or followed by
        # punctuation or the end (lowercase too: "is b." but not "is a number")
        self._committed = re.compile(
            rf"\(\s*([{up}{low}])\s*\)|\*\*\s*([{up}{low}])\s*\*\*"
            rf"|(?<![A-Za-z])([{up}])(?![A-Za-z'])|(?<![A-Za-z])([{low}])(?=\s*(?:[.,;:!?)]|$))"
        )
        self._paren = re.compile(rf"\(\s*([{up}{low}])\s*\)")
        # "B) ...", "B. ...", "B: ...", "B" alone, "**B** ..." ("A and C ..." is a sentence, not a choice)
        self._line_start = re.compile(rf"^[^\w*]*(?:\*\*\s*([{up}])\s*\*\*|([{up}])\s*(?:[).:\]]|$))")

    # -- gold -------------------------------------------------------------------------------------------
    def parse_gold(self, value: Any, n_choices: int | None = None) -> str:
        """A gold answer as a letter: the letter itself ("B", "(b)"), or an index into the choices (1 or
        "1" is B). `n_choices` (when the row lists its choices) bounds both."""
        allowed = self.letters[:n_choices] if n_choices else self.letters
        if isinstance(value, bool):
            raise BadGold("a boolean, not a letter or an index")
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            index = int(value)
            if not 0 <= index < len(allowed):
                raise BadGold(f"index {index} is not one of 0..{len(allowed) - 1}")
            return allowed[index]
        if isinstance(value, str):
            text = normalize_text(value).strip("()").strip().upper()
            if len(text) == 1 and text in allowed:
                return text
        raise BadGold(f"not one of the letters {allowed} or an index into them")

    # -- responses --------------------------------------------------------------------------------------
    def _one(self, hits: list[str]) -> str | None:
        """The letter of a deciding unit: None when it names two different letters (ambiguous)."""
        letters = {h.upper() for h in hits}
        return letters.pop() if len(letters) == 1 else None

    def _committed_in(self, text: str) -> list[str]:
        return [next(g for g in m.groups() if g) for m in self._committed.finditer(text)]

    def extract(self, response: str, choices: list[str] | None = None) -> str | None:
        """The letter `response` commits to, or None (none, or ambiguous); `choices` are the options' texts
        in letter order, for an answer given as a choice's text."""
        statements = answer_is_spans(response)
        for span in reversed(statements):
            # the statement's first clause: "(B), because (A) ..." commits to B
            head = re.split(r"[;\n]|\bbecause\b|\bsince\b|,\s+(?:as|which|while|not)\b", span, maxsplit=1)[0]
            hits = self._committed_in(head)
            if hits:
                return self._one(hits)
            text = self._choice_text(head, choices)
            if text:
                return text
        for span in reversed(boxed_spans(response)):
            hits = self._committed_in(span)
            if hits:
                return self._one(hits)
        lines = [line for line in response.splitlines() if line.strip()]
        for line in reversed(lines):  # the last clause with a "(X)": "(A) is wrong, so (C)" is C
            clauses = [c for c in _CLAUSE.split(line) if self._paren.search(c)]
            if clauses:
                return self._one(self._paren.findall(clauses[-1]))
        for line in reversed(lines):
            m = self._line_start.match(line.strip())
            if m:
                return m.group(1) or m.group(2)
        if lines:  # the last line's letters ("Option B is correct."), else its text as a choice's
            hits = self._committed_in(lines[-1])
            return self._one(hits) if hits else self._choice_text(lines[-1], choices)
        return None

    def _choice_text(self, text: str, choices: list[str] | None) -> str | None:
        if not choices:
            return None
        said = normalize_text(text)
        found = [
            self.letters[i] for i, c in enumerate(choices[: len(self.letters)]) if normalize_text(c) == said
        ]
        return found[0] if len(found) == 1 else None

    def render(self, question: str, choices: list[str]) -> str:
        """The question with its choices as Du et al.'s MMLU prompt lists them: "Q: A) x, B) y, C) z"."""
        listed = ", ".join(f"{self.letters[i]}) {c}" for i, c in enumerate(choices))
        return f"{question}: {listed}"
