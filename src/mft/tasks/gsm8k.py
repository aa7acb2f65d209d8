"""GSM8K (Cobbe et al. 2021): grade-school word problems with a numeric answer.

Source: the hub dataset `openai/gsm8k`, config `main` (official train -> train pool, test -> test pool), or
local JSONL/parquet/JSON in the same schema: `question`, and `answer` = the worked solution whose last line
is `#### N` (a bare number is accepted too). Gold answers are read as exact numbers (commas, negatives,
decimals, fractions) and stored canonically (`format_number`).

Extraction (`NumberAnswers.extract`), first hit wins:
  1. the last \\boxed{...}: the last number inside it;
  2. the last 'answer is' / 'answer:' phrase: the first number after it on its line;
  3. the last '#### N' line (the dataset's own answer format);
  4. lenient only (the default): the last number anywhere in the response.
Equivalence is exact numeric equality: 1,000 == 1000 == 1000.0, 0.5 == 1/2 == \\frac{1}{2}.
"""

from __future__ import annotations

import re
from typing import Any

from mft.records import Problem
from mft.tasks.answers import answer_is_spans, boxed_spans, find_numbers, format_number, parse_number
from mft.tasks.custom import BadGold, DatasetTask, DataSource, Row

# The prompt of Du et al. (2023) for GSM8K, which the paper uses.
PROMPT = (
    "Can you solve the following math problem? {question} Explain your reasoning. Your final answer should "
    "be a single numerical number, in the form \\boxed{answer}, at the end of your response."
)

_HASHES = re.compile(r"^\s*####\s*(.*?)\s*$", re.MULTILINE)


class NumberAnswers:
    """Numeric gold parsing, extraction and equivalence (shared with the custom task's 'number' type)."""

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
        if a is None or b is None:
            return False
        na, nb = parse_number(a.strip()), parse_number(b.strip())
        return na is not None and na == nb


class GSM8KTask(DatasetTask):
    """GSM8K. `data`: None (the hub) or a local file/directory/mapping; `strict`: no last-number fallback."""

    name = "gsm8k"
    question_field = "question"
    answer_field = "answer"
    hub_name = "openai/gsm8k"
    hub_configs = ("main",)

    def __init__(
        self, data: DataSource | None = None, *, strict: bool = False, skip_bad_gold: bool = False
    ) -> None:
        super().__init__(data, skip_bad_gold=skip_bad_gold)
        self.strict = strict
        self.answers = NumberAnswers(strict=strict)
        # a change of prompt or scoring bumps the number; strict and lenient scoring are different versions
        self.version = "1-strict" if strict else "1-lenient"

    def parse_gold(self, value: Any, row: Row) -> str:
        return self.answers.parse_gold(value)

    def question_prompt(self, problem: Problem) -> str:
        return PROMPT.replace("{question}", problem.question)

    def extract_answer(self, response: str) -> str | None:
        return self.answers.extract(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        return self.answers.equal(a, b)
