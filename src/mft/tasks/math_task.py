"""MATH (Hendrycks et al. 2021): competition problems with LaTeX answers, levels 1-5.

Source: the hub dataset `EleutherAI/hendrycks_math` (one config per subject, all loaded; official train ->
train pool, test -> test pool), another MATH-schema hub dataset (`hub_name`, `hub_configs`), or local
JSONL/parquet/JSON files in the MATH schema: `problem`, `solution`, `level` ("Level 2"; an int is accepted)
and `type`. The original release's layout (`MATH/train/algebra/1.json`, one problem per file) works as a
directory. The paper uses levels 1-3 (the default `levels`; `levels: null` in a config's task_options asks
for every level); rows outside the levels are not candidates (rows whose level is "Level ?" never match a
filter).

The gold answer is the content of the LAST \\boxed{...} (or \\fbox{...}, or `\\boxed 5`) in the solution,
braces matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; when a solution has no box and the row has an
`answer` field (MATH-500 style), that is used.

Extraction from a response: the last \\boxed{}; else the last 'answer is ...' phrase (its first $...$ span,
or the text up to the end of the sentence). Equivalence: identical after string normalisation, else
math-verify (`parse` + `verify`, the gold as reference), all bounded by `timeout_s` seconds (a timeout
counts as not equivalent), see `latex.latex_equal`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mft.errors import MftError
from mft.records import Problem
from mft.tasks.base import BadGold, PaperPrompts, paper_summarize_prompt
from mft.tasks.dataset import DatasetTask
from mft.tasks.latex import extract_latex_answer, latex_equal, require_math_verify
from mft.tasks.sources import DataSource, Row
from mft.tasks.spans import last_boxed, strip_math_delimiters

SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

# The paper's MATH prompts, as in its official code (grammar fixed, spacing normalised). Round 1 asks for a
# bullet-point summary of the reasoning; later rounds restate the question and the \boxed{} answer form, so
# an agent that follows another's reasoning still answers this problem, in a form the scorer reads.
# Substitution is by `str.replace`: LaTeX questions and responses are full of braces.
PROMPT = (
    "Can you solve the following math problem? {question} Provide a bullet point summary of your reasoning. "
    "Your final answer should be a single answer, in the form \\boxed{answer}, at the end of your response."
)
DEBATE_PROMPT = (
    "Here are solutions from other agents:\n\n{solutions}\n\n"
    "Using each response as additional advice, can you give an updated bullet by bullet answer to "
    "{question}? Your final answer should be in the form \\boxed{answer} given at the end of your response."
)
SOLUTION_ITEM = "One agent response: {response}"
SUMMARY_DEBATE_PROMPT = (
    "Here is a summary of solutions from several other agents: {summary}\n\n"
    "Examine each of these solutions as additional advice, can you solve {question} and give your updated "
    "answer? Explain your reasoning.\nYour final answer should be in the form \\boxed{answer} given at the "
    "end of your response."
)
# With no other agent (N = 1), the paper's code asks the agent to check its own answer.
SELF_CHECK_PROMPT = (
    "Can you double check that your answer is correct? Please reiterate your answer, with your final answer "
    "a single answer of the form \\boxed{answer} at the end of your response."
)


def parse_level(value: Any) -> int | None:
    """'Level 2' / 2 / '2' -> 2; 'Level ?' and anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", value, re.IGNORECASE)
        return int(m.group(1)) if m else None
    return None


def gold_from_solution(solution: str) -> str | None:
    """The last boxed answer of a MATH solution, without $ or a final period; None when there is none."""
    boxed = last_boxed(solution)
    if boxed is None:
        return None
    return strip_math_delimiters(boxed) or None


PROMPTS = PaperPrompts(PROMPT, DEBATE_PROMPT, SOLUTION_ITEM, SUMMARY_DEBATE_PROMPT, SELF_CHECK_PROMPT)


class MathTask(DatasetTask):
    """MATH. `levels`: which difficulty levels are candidates (None: all); `timeout_s`: per comparison."""

    name = "math"
    # 2: the paper's prompts (bullet-point reasoning; later rounds restate the question and ask for
    # \boxed{answer}; its summariser prompt)
    version = "2"
    max_new_tokens = 2048  # the paper's response budget with open models (its code: prompt + 2048 tokens)
    question_field = "problem"
    answer_field = "solution"
    hub_name = "EleutherAI/hendrycks_math"
    hub_configs: tuple[str | None, ...] = SUBJECTS

    def __init__(
        self,
        data: DataSource | None = None,
        *,
        levels: Iterable[int] | None = (1, 2, 3),
        hub_name: str | None = None,
        hub_configs: Iterable[str] | None = None,
        timeout_s: float = 5.0,
        skip_bad_gold: bool = False,
    ) -> None:
        super().__init__(data, skip_bad_gold=skip_bad_gold)
        require_math_verify()
        self.levels = None if levels is None else tuple(sorted({int(x) for x in levels}))
        if self.levels is not None and not self.levels:
            raise MftError("levels is empty", hint="e.g. levels=[1, 2, 3], or None for all levels")
        if hub_name is not None:
            self.hub_name = hub_name
            # another dataset: its default config unless told otherwise
            self.hub_configs = (None,) if hub_configs is None else tuple(hub_configs)
        elif hub_configs is not None:
            self.hub_configs = tuple(hub_configs)
        if timeout_s is not None and timeout_s <= 0:
            raise MftError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s

    @property
    def schema(self) -> str:
        return "fields 'problem', 'solution' (with a \\boxed{} answer), 'level' and 'type'"

    def keep(self, row: Row) -> bool:
        if self.levels is None:
            return True
        return parse_level(self.field_value(row, "level")) in self.levels

    def row_meta(self, row: Row) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if row.data.get("level") is not None:
            meta["level"] = parse_level(row.data["level"])
        subject = row.data.get("type", row.data.get("subject"))
        if subject is not None:
            meta["type"] = subject
        return meta

    def parse_gold(self, value: Any, row: Row) -> str:
        if not isinstance(value, str):
            raise BadGold("the solution is not text")
        gold = gold_from_solution(value)
        if gold is None and isinstance(row.data.get("answer"), str) and row.data["answer"].strip():
            gold = strip_math_delimiters(row.data["answer"]) or None
        if gold is None:
            raise BadGold("no \\boxed{} answer in the solution")
        return gold

    def question_prompt(self, problem: Problem) -> str:
        return PROMPTS.question_prompt(problem)

    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return PROMPTS.debate_prompt(problem, other_responses)

    def summarize_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return paper_summarize_prompt(other_responses)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        return PROMPTS.summary_debate_prompt(problem, summary)

    def extract_answer(self, response: str) -> str | None:
        return extract_latex_answer(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        """Whether `a` and `b` are the same answer; `b` is the reference (math-verify is not symmetric)."""
        return latex_equal(a, b, self.timeout_s)
