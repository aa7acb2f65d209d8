"""GSM8K (Cobbe et al. 2021): grade-school word problems with a numeric answer.

Source: the hub dataset `openai/gsm8k`, config `main` (official train -> train pool, test -> test pool), or
local JSONL/parquet/JSON in the same schema: `question`, and `answer` = the worked solution whose last line
is `#### N` (a bare number is accepted too). Gold answers are read as exact numbers (commas, negatives,
decimals, fractions) and stored canonically (`numbers.format_number`).

Scoring is `numbers.NumberAnswers` (shared with the custom task's 'number' type): the last \\boxed{}, else
the last 'answer is', else the last '#### N', else (lenient, the default) the last number in the response;
equivalence is exact numeric equality (1,000 == 1000 == 1000.0, 0.5 == 1/2 == \\frac{1}{2}).
"""

from __future__ import annotations

from typing import Any

from mft.records import Problem
from mft.tasks.dataset import DatasetTask
from mft.tasks.numbers import NumberAnswers
from mft.tasks.sources import DataSource, Row

# The prompt of Du et al. (2023) for GSM8K, which the paper uses.
PROMPT = (
    "Can you solve the following math problem? {question} Explain your reasoning. Your final answer should "
    "be a single numerical number, in the form \\boxed{answer}, at the end of your response."
)


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
