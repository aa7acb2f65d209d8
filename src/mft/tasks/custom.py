"""The custom task: the method on a user's JSONL (or .json / .parquet, or a train/test directory), no code.

Field names, the answer type (number / latex / exact string / multiple-choice letter) and optionally the
prompt are settings. Reading, validation and the split are `dataset.DatasetTask`'s; scoring reuses the
number parser of GSM8K (`numbers.NumberAnswers`) and the LaTeX comparison of MATH (`latex`), so a custom
'number' or 'latex' task scores exactly like those benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from mft.errors import MftError
from mft.records import Problem
from mft.tasks.base import BadGold
from mft.tasks.choice import ChoiceAnswers
from mft.tasks.dataset import DatasetTask
from mft.tasks.latex import extract_latex_answer, latex_equal, require_math_verify
from mft.tasks.numbers import NumberAnswers
from mft.tasks.sources import DataSource, Row
from mft.tasks.spans import (
    answer_is_spans,
    first_math_span,
    last_boxed,
    normalize_text,
    strip_math_delimiters,
)

ANSWER_TYPES = ("number", "latex", "exact", "choice")

PROMPTS = {
    # Du et al. 2023's prompts (number: GSM8K; choice: their multiple-choice prompt), latex: the MATH prompt.
    "number": "Can you solve the following math problem? {question} Explain your reasoning. Your final "
    "answer should be a single numerical number, in the form \\boxed{answer}, at the end of your response.",
    "latex": "Can you solve the following math problem? {question} Explain your reasoning. Your final answer "
    "should be in the form \\boxed{answer}, at the end of your response.",
    "exact": "Can you answer the following question? {question} Explain your reasoning. Your final answer "
    "should be in the form \\boxed{answer}, at the end of your response.",
    "choice": "Can you answer the following question as accurately as possible? {question} Explain your "
    "answer, putting the answer in the form (X) at the end of your response.",
}


class CustomTask(DatasetTask):
    """Any JSONL (or .json / .parquet, or a train/test directory) with a question and an answer field.

    Settings: `question_field`, `answer_field`, `answer_type` (number | latex | exact | choice), `id_field`
    (optional; default ids are `<file>#<hash of the question>`), `prompt` (optional; must contain
    `{question}`), `choices` (the letters allowed for answer_type=choice), `strict` (number only: no
    last-number fallback), `timeout_s` (latex only). The version records a digest of the settings that
    change prompts or scoring.
    """

    name = "custom"
    ids_unique_across_splits = True  # a user's train and test files may share a problem: refused

    def __init__(
        self,
        data: DataSource | None = None,
        *,
        question_field: str = "question",
        answer_field: str = "answer",
        answer_type: str = "number",
        id_field: str | None = None,
        prompt: str | None = None,
        choices: str = "ABCDE",
        choices_field: str | None = None,
        strict: bool = False,
        timeout_s: float = 5.0,
        skip_bad_gold: bool = False,
    ) -> None:
        super().__init__(data, skip_bad_gold=skip_bad_gold)
        if data is None:
            raise MftError("the custom task needs a data file", hint="pass data=PATH / --data PATH")
        if answer_type not in ANSWER_TYPES:
            raise MftError(
                f"unknown answer type {answer_type!r}", hint=f"choose one of: {', '.join(ANSWER_TYPES)}"
            )
        template = PROMPTS[answer_type] if prompt is None else prompt
        if "{question}" not in template:
            raise MftError("the custom prompt must contain '{question}'", hint="e.g. 'Solve: {question}'")
        letters = "".join(dict.fromkeys(c.upper() for c in choices if c.isalpha()))
        if answer_type == "choice" and not letters:
            raise MftError(f"choices must be letters, got {choices!r}", hint="e.g. choices='ABCD'")
        self.question_field = question_field
        self.answer_field = answer_field
        self.answer_type = answer_type
        self.id_field = id_field
        self.prompt = template
        self.choices = letters
        # answer_type=choice: a field listing the options' texts, shown after the question as Du et al.'s
        # MMLU prompt lists them ("...: A) x, B) y"); the gold may then be a letter or an index into them
        self.choices_field = choices_field
        self._choice = ChoiceAnswers(letters or "A")
        self.strict = strict
        self.timeout_s = timeout_s
        settings = [question_field, answer_field, answer_type, template, letters, strict]
        if choices_field is not None:
            settings.append(choices_field)
        digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:8]
        # 2: default ids are <file>#<question hash>, not file:line (records of version 1 are not mixed in);
        # 3 (choice only): letters read by `choice.ChoiceAnswers` (answer statements, lines, bold, ...)
        self.version = f"{3 if answer_type == 'choice' else 2}-{answer_type}-{digest}"
        if answer_type == "latex":
            require_math_verify()
        if answer_type == "number":
            self._numbers = NumberAnswers(strict=strict)
        letter_set = re.escape(self.choices) if self.choices else "A-Z"
        self._choice_alone = re.compile(rf"^\(?\s*([{letter_set}])\s*(?:\)|[.,:;]|$)")

    @property
    def schema(self) -> str:
        return f"fields {self.question_field!r}, {self.answer_field!r}" + (
            f", {self.id_field!r}" if self.id_field else ""
        )

    def problem_id(self, row: Row) -> str:
        """The row's `id_field`, else `<file>#<hash of the question>`: an id that an edit of another row, or
        rows added or removed above it, leaves alone (a line number would shift). Identical questions are
        one problem (the first row; `DatasetTask.load` drops the rest), so these ids are unique."""
        if self.id_field is None:
            digest = hashlib.sha256(self.question_text(row).encode("utf-8")).hexdigest()[:12]
            return f"{row.file or row.key}#{digest}"
        return str(self.field_value(row, self.id_field))

    def parse_gold(self, value: Any, row: Row) -> str:
        if self.answer_type == "number":
            return self._numbers.parse_gold(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise BadGold("empty or not text")
        if self.answer_type == "latex":
            boxed = last_boxed(value)
            gold = strip_math_delimiters(boxed if boxed is not None else value)
            if not gold:
                raise BadGold("empty answer")
            return gold
        if self.answer_type == "exact":
            gold = value.strip()
            if not normalize_text(gold):
                raise BadGold("empty answer")
            return gold
        return self._choice.parse_gold(value, len(self._options(row)) if self.choices_field else None)

    def _options(self, row: Row) -> list[str]:
        options = self.field_value(row, self.choices_field) if self.choices_field else []
        if not isinstance(options, list) or not options or len(options) > len(self.choices):
            raise MftError(
                f"{row.where}: field {self.choices_field!r} must list 1 to {len(self.choices)} choices, got "
                f"{options!r:.60}",
                hint="a list of the options' texts, in letter order (or widen `choices`)",
            )
        return [str(o) for o in options]

    def question_text(self, row: Row) -> str:
        question = super().question_text(row)
        if self.answer_type != "choice" or not self.choices_field:
            return question
        return self._choice.render(question, self._options(row))

    def question_prompt(self, problem: Problem) -> str:
        return self.prompt.replace("{question}", problem.question)

    def _letter(self, text: str) -> str | None:
        text = strip_math_delimiters(re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", text)).strip()
        m = self._choice_alone.match(text.upper() if len(text) <= 4 else text)
        return m.group(1) if m else None

    def extract_answer(self, response: str) -> str | None:
        if self.answer_type == "number":
            return self._numbers.extract(response)
        if self.answer_type == "latex":
            return extract_latex_answer(response)
        if self.answer_type == "exact":
            boxed = last_boxed(response)
            if boxed is not None:
                return boxed.strip() or None
            spans = answer_is_spans(response)
            if spans:
                return first_math_span(spans[-1]) or None
            return None
        return self._choice.extract(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        if self.answer_type == "number":
            return self._numbers.equal(a, b)
        if self.answer_type == "latex":
            return latex_equal(a, b, self.timeout_s)
        if self.answer_type == "exact":
            na = normalize_text(a)
            return bool(na) and na == normalize_text(b)
        la, lb = self._letter(a), self._letter(b)
        return la is not None and la == lb
