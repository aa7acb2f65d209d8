"""The task interface: load problems, make prompts, extract and compare answers.

A task is small (the lm-evaluation-harness shape). Its `extract_answer` + `is_equivalent` are the project's
single scoring function: consensus voting, training-data filtering and evaluation all call them, so there
is never a second copy of answer parsing. A response with no parseable answer is wrong, never skipped.

Prompts belong to the task and are versioned: changing a prompt or the scoring must bump `version`, which
is recorded in every artifact.

Also here, because every task shares them: the split names, the one keyed pool split (`pool_of`) that keeps
train and test disjoint, and `BadGold`, what parsing an unusable gold answer raises.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from mft.errors import MftError
from mft.records import Problem

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


def pool_of(key: str, seed: int) -> Split:
    """Which pool ('train' or 'test') the problem keyed `key` belongs to, for this split seed.

    A keyed hash rather than a shuffle-and-cut, so a problem's pool never depends on which other problems
    exist or how many are drawn: train and test stay disjoint whatever their sizes. Arithmetic keys a
    problem by `str(ops)`, the dataset tasks by the stripped question text. Changing this formula moves
    problems between pools (and so changes every recorded split): don't.
    """
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return "test" if digest[0] % 2 == 0 else "train"


class PoolTooSmall(MftError):
    """A task was asked for more problems of a split than its pool holds (`load_split` names the flag)."""

    def __init__(self, source: str, split: str, available: int, asked: int, task: str) -> None:
        super().__init__(
            f"{source}: only {available:,} {split} problems available for task {task!r}, asked for {asked:,}",
            hint=f"ask for at most {available:,}",
        )
        self.source, self.split, self.available, self.asked, self.task = source, split, available, asked, task


def load_split(task: Task, split: str, n: int | None, seed: int, flag: str) -> list[Problem]:
    """`task.load(split, n, seed)`, with a split larger than its pool refused naming `flag` (the setting that
    asked for `n`), before any problem is drawn."""
    try:
        return task.load(split, n, seed=seed)
    except PoolTooSmall as exc:
        raise MftError(
            f"{flag} {exc.asked:,} is more than the {exc.split} pool of task {exc.task!r} holds "
            f"({exc.available:,} problems; {exc.source})",
            hint=f"use {flag} {exc.available:,} or fewer",
        ) from None


class BadGold(Exception):
    """A row's gold answer cannot be parsed (reason in the message). Turned into an MftError or a skip.

    Here rather than with the dataset machinery because the answer parsers (`numbers.NumberAnswers`) raise
    it too, and they must not depend on how rows are read.
    """


# The shared default debate prompts, after Du et al. (2023)'s arithmetic ones: they name no question (the
# agent's own first turn holds it) and ask for no answer format. Round r > 1 shows an agent the other
# agents' round r-1 responses, or a summary of them. Custom tasks use them; arithmetic has Du et al.'s own
# (character for character, the bundled model's pretraining texts), GSM8K and MATH the paper's, which
# restate the question and ask for \boxed{answer}.
DEBATE_PROMPT = (
    "These are the solutions to the problem from other agents:\n\n{solutions}\n\n"
    "Using the reasoning from other agents as additional advice, can you give an updated answer? "
    "Make sure to state your answer at the end of the response."
)
SOLUTION_ITEM = "One agent solution: ```{response}```"
# STaR's rationalization (Zelikman et al. 2022): the answer is given, the model writes the reasoning to it.
HINT = "\n\nHint: the correct answer is {answer}. Explain step by step how to reach it."
SUMMARIZE_PROMPT = (
    "Here are a list of opinions from different agents:\n\n{solutions}\n\n"
    "Write a summary of the different opinions from each of the individual agents."
)
SUMMARY_DEBATE_PROMPT = (
    "Here is a summary of responses from other agents: {summary}\n\n"
    "Use this summary carefully as additional advice, can you give an updated answer? "
    "Make sure to state your answer at the end of the response."
)
# The paper's summariser prompt (as in its official code, grammar fixed), which arithmetic, GSM8K and MATH
# use: the summary also explains each solution's reasoning, so an agent reading it can check that
# reasoning, not only count answers.
PAPER_SUMMARIZE_PROMPT = (
    "Here is a list of opinions from different agents:\n\n{solutions}\n\n"
    "Write a summary of the different opinions from each of the individual agents and explain the "
    "reasoning in each solution."
)
PAPER_SUMMARY_ITEM = "One agent response: ```{response}```"
# A cooperative interaction (`interaction: cooperative`, the paper's Table 3): mft's own wording, as the
# paper's appendix that defines its setting could not be read (docs/faithfulness.md). A later round opens with
# this, then shows the others' answers (or their summary) exactly as the task's debate round does.
COOPERATIVE_OPENING = (
    "You are working together with the other agents as one team: build on the correct steps of their "
    "solutions, fix any mistake you find in them or in your own, and aim for the one answer the whole team "
    "can agree on."
)


def paper_summarize_prompt(other_responses: list[str]) -> str:
    """The paper's summariser request for `other_responses` (arithmetic, GSM8K and MATH)."""
    items = "\n\n".join(PAPER_SUMMARY_ITEM.format(response=r) for r in other_responses)
    return PAPER_SUMMARIZE_PROMPT.format(solutions=items)


@dataclass(frozen=True)
class PaperPrompts:
    """A task's prompts in the paper's form (GSM8K, MATH): `{question}`, `{solutions}`, `{summary}` and
    `{response}` are filled with `str.replace`, never `format`, so LaTeX braces in a question stay as written.
    `self_check` is the later-round prompt of a single agent (no other answers to read)."""

    question: str
    debate: str
    solution_item: str
    summary_debate: str
    self_check: str

    def question_prompt(self, problem: Problem) -> str:
        return self.question.replace("{question}", problem.question)

    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        if not other_responses:
            return self.self_check
        items = "\n\n".join(self.solution_item.replace("{response}", r) for r in other_responses)
        return self.debate.replace("{question}", problem.question).replace("{solutions}", items)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        return self.summary_debate.replace("{question}", problem.question).replace("{summary}", summary)


class Task(ABC):
    """One benchmark. Subclasses set `name` and `version` and implement the abstract methods."""

    name: str = "task"
    version: str = "1"
    # default response budget (a custom task's); GSM8K and MATH use the paper's 2048, the toy arithmetic 160
    max_new_tokens: int = 512

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
    # Each gets the problem debated, so a task's later-round prompts can restate its question (the paper's
    # GSM8K and MATH prompts do); the shared default does not use it.
    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        """The round r > 1 user message: the other agents' previous responses, asking for an update."""
        items = "\n\n".join(SOLUTION_ITEM.format(response=r) for r in other_responses)
        return DEBATE_PROMPT.format(solutions=items)

    def summarize_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        """The summariser's request, in summary mode (the paper's cheaper variant of the debate round)."""
        items = "\n\n".join(SOLUTION_ITEM.format(response=r) for r in other_responses)
        return SUMMARIZE_PROMPT.format(solutions=items)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        """The round r > 1 user message in summary mode: a summary instead of the responses themselves."""
        return SUMMARY_DEBATE_PROMPT.format(summary=summary)

    def cooperative_prompt(self, later_prompt: str) -> str:
        """A later round of a cooperative interaction: the debate round's message (`debate_prompt` or
        `summary_debate_prompt`) opened by `COOPERATIVE_OPENING`."""
        return f"{COOPERATIVE_OPENING}\n\n{later_prompt}"

    def hint_prompt(self, problem: Problem) -> str:
        """STaR's rationalization request: the round-1 prompt with the gold answer given as a hint."""
        return self.question_prompt(problem) + HINT.format(answer=problem.answer)

    def score(self, response: str, gold: str) -> bool:
        """Whether `response` is right: extract, then compare with the gold answer as the reference."""
        return self.is_equivalent(self.extract_answer(response), gold)
