"""The task interface: load problems, make prompts, extract and compare answers.

A task is small (the lm-evaluation-harness shape). Its `extract_answer` + `is_equivalent` are the project's
single scoring function: consensus voting, training-data filtering and evaluation all call them, so there
is never a second copy of answer parsing. A response with no parseable answer is wrong, never skipped.

Prompts belong to the task and are versioned: changing a prompt or the scoring must bump `version`, which
is recorded in every artifact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from mft.records import Problem

# The paper's debate prompts (Du et al. 2023 / Subramaniam et al. 2025), lightly shortened. Round r > 1
# shows an agent the other agents' round r-1 responses, or a summary of them.
DEBATE_PROMPT = (
    "These are the solutions to the problem from other agents:\n\n{solutions}\n\n"
    "Using the reasoning from other agents as additional advice, can you give an updated answer? "
    "Make sure to state your answer at the end of the response."
)
SOLUTION_ITEM = "One agent solution: ```{response}```"
SUMMARIZE_PROMPT = (
    "Here are a list of opinions from different agents:\n\n{solutions}\n\n"
    "Write a summary of the different opinions from each of the individual agents."
)
SUMMARY_DEBATE_PROMPT = (
    "Here is a summary of responses from other agents: {summary}\n\n"
    "Use this summary carefully as additional advice, can you give an updated answer? "
    "Make sure to state your answer at the end of the response."
)


class Task(ABC):
    """One benchmark. Subclasses set `name` and `version` and implement the abstract methods."""

    name: str = "task"
    version: str = "1"
    max_new_tokens: int = 512  # default response budget; worked solutions of real benchmarks are long

    @abstractmethod
    def load(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems of `split` ("train" or "test"); train and test come from disjoint pools."""

    @abstractmethod
    def question_prompt(self, problem: Problem) -> str:
        """The round-1 user message."""

    @abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The final answer written in a response, normalised; None when there is none."""

    @abstractmethod
    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        """Whether two extracted/gold answers are the same answer. None is never equivalent to anything."""

    # -- debate prompts (shared default; a task may override) ---------------------------------------------
    def debate_prompt(self, other_responses: list[str]) -> str:
        items = "\n\n".join(SOLUTION_ITEM.format(response=r) for r in other_responses)
        return DEBATE_PROMPT.format(solutions=items)

    def summarize_prompt(self, other_responses: list[str]) -> str:
        items = "\n\n".join(SOLUTION_ITEM.format(response=r) for r in other_responses)
        return SUMMARIZE_PROMPT.format(solutions=items)

    def summary_debate_prompt(self, summary: str) -> str:
        return SUMMARY_DEBATE_PROMPT.format(summary=summary)

    def score(self, response: str, gold: str) -> bool:
        return self.is_equivalent(self.extract_answer(response), gold)
