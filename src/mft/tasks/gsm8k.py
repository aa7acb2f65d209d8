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
from mft.tasks.base import PaperPrompts, paper_summarize_prompt
from mft.tasks.dataset import DatasetTask
from mft.tasks.numbers import NumberAnswers
from mft.tasks.sources import DataSource, Row

# The prompts of Du et al. (2023) for GSM8K, which the paper uses. Later rounds restate the question and the
# answer form, so an agent that follows another's reasoning still answers this problem, in a form the
# scorer reads. Substitution is by `str.replace`: a question or response may hold braces.
ANSWER_FORM = (
    "Your final answer should be a single numerical number, in the form \\boxed{answer}, at the end of your "
    "response."
)
PROMPT = "Can you solve the following math problem? {question} Explain your reasoning. " + ANSWER_FORM
DEBATE_PROMPT = (
    "These are the solutions to the problem from other agents:\n\n{solutions}\n\n"
    "Using the solutions from other agents as additional information, can you provide your answer to the "
    "math problem? The original math problem is {question}. " + ANSWER_FORM
)
SOLUTION_ITEM = "One agent solution: ```{response}```"
# Du et al. have no summary variant for GSM8K: this is their debate prompt with the paper's summary framing
# (its MATH summary prompt) in place of the solutions.
SUMMARY_DEBATE_PROMPT = (
    "Here is a summary of solutions from several other agents: {summary}\n\n"
    "Using the summary as additional information, can you provide your answer to the math problem? "
    "The original math problem is {question}. " + ANSWER_FORM
)
# With no other agent (N = 1), Du et al. ask the agent to check its own answer.
SELF_CHECK_PROMPT = (
    "Can you double check that your answer is correct? Please reiterate your answer, with your final answer "
    "a single numerical number, in the form \\boxed{answer}."
)


PROMPTS = PaperPrompts(PROMPT, DEBATE_PROMPT, SOLUTION_ITEM, SUMMARY_DEBATE_PROMPT, SELF_CHECK_PROMPT)


class GSM8KTask(DatasetTask):
    """GSM8K. `data`: None (the hub) or a local file/directory/mapping; `strict`: no last-number fallback."""

    name = "gsm8k"
    question_field = "question"
    answer_field = "answer"
    hub_name = "openai/gsm8k"
    hub_configs = ("main",)
    max_new_tokens = 2048  # the paper's response budget with open models (its code: prompt + 2048 tokens)

    def __init__(
        self, data: DataSource | None = None, *, strict: bool = False, skip_bad_gold: bool = False
    ) -> None:
        super().__init__(data, skip_bad_gold=skip_bad_gold)
        self.strict = strict
        self.answers = NumberAnswers(strict=strict)
        # a change of prompt or scoring bumps the number; strict and lenient scoring are different versions
        # 2: later-round prompts restate the question and ask for \boxed{answer}; the paper's summariser
        # prompt
        self.version = "2-strict" if strict else "2-lenient"

    def parse_gold(self, value: Any, row: Row) -> str:
        return self.answers.parse_gold(value)

    def question_prompt(self, problem: Problem) -> str:
        return PROMPTS.question_prompt(problem)

    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return PROMPTS.debate_prompt(problem, other_responses)

    def summarize_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return paper_summarize_prompt(other_responses)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        return PROMPTS.summary_debate_prompt(problem, summary)

    def extract_answer(self, response: str) -> str | None:
        return self.answers.extract(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        return self.answers.equal(a, b)
