"""The paper's arithmetic task: evaluate a+b*c+d-e*f with integers 0..29, in Du et al.'s prompts.

Du et al. (2023), whose arithmetic debate the paper uses, draw each operand with `np.random.randint(0, 30)`
(0..29) and ask "What is the result of ...? Make sure to state your answer at the end of the response."; a
later round shows the other agents' responses as "These are the recent/updated opinions from other agents:"
and asks for an updated answer. With summaries, the summariser is asked as in the paper's code (each
opinion summarised and its reasoning explained), and the agent is shown the summary with the question
restated, as the paper's summary prompt restates its MATH problem.

Splits come from disjoint pools: every operand tuple belongs to exactly one pool, decided by `base.pool_of`
keyed by the tuple's text (`str(ops)`) and the split seed, so train and test can never share a problem
whatever their sizes. Within a
pool, problems are drawn by a seeded generator, without repeats.
"""

from __future__ import annotations

import random
import re

from mft.errors import MftError
from mft.records import Problem
from mft.tasks.base import SPLITS, PoolTooSmall, Task, paper_summarize_prompt, pool_of

MAX_VALUE = 29  # operands 0..29, as Du et al.'s randint(0, 30)
# Each of the 30^6 operand tuples is in one of the two pools (`pool_of`, a keyed hash: about half each, the
# exact count is unknown without hashing them all). Drawing is rejection sampling, so a split must stay
# clearly below its pool's size: asking for more would never finish. This bound is about a million (some
# 70 standard deviations of the hash's split) below half of the tuples.
POOL_SIZE = (MAX_VALUE + 1) ** 6 // 2 - 1_000_000
_ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?\\?(?:boxed\{)?\s*(-?\d[\d,]*)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{\s*(-?\d[\d,]*)\s*\}")
_INT = re.compile(r"-?\d[\d,]*")

# Du et al.'s arithmetic prompts, character for character (their spacing included).
QUESTION = "What is the result of {question}? Make sure to state your answer at the end of the response."
DEBATE_PREFIX = "These are the recent/updated opinions from other agents: "
DEBATE_ITEM = "\n\n One agent response: ```{response}```"
DEBATE_SUFFIX = (
    "\n\n Use these opinions carefully as additional advice, can you provide an updated answer? "
    "Make sure to state your answer at the end of the response."
)
# With no other agent (N = 1), Du et al. ask the agent to check its own answer.
SELF_CHECK = (
    "Can you verify that your answer is correct. Please reiterate your answer, making sure to state your "
    "answer at the end of the response."
)
# The summary in the place of the opinions, the question restated as the paper's summary prompt does.
SUMMARY_DEBATE = (
    "Here is a summary of the recent/updated opinions from other agents: {summary}\n\n"
    "Use this summary carefully as additional advice, can you provide an updated answer? "
    "The original problem is: What is the result of {question}? "
    "Make sure to state your answer at the end of the response."
)


def evaluate(ops: tuple[int, int, int, int, int, int]) -> int:
    """The true value of a+b*c+d-e*f (operator precedence: the products first)."""
    a, b, c, d, e, f = ops
    return a + b * c + d - e * f


def sample_problems(split: str, n: int, seed: int = 0) -> list[tuple[int, int, int, int, int, int]]:
    """`n` distinct operand tuples from `split`'s pool, reproducible from `seed`."""
    if split not in SPLITS:
        raise MftError(f"unknown split {split!r}", hint="use 'train' or 'test'")
    if n > POOL_SIZE:
        raise PoolTooSmall(f"operand tuples 0..{MAX_VALUE}", split, POOL_SIZE, n, "arithmetic")
    rng = random.Random(f"arithmetic:{seed}:{split}")
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, int, int, int, int, int]] = []
    while len(out) < n:
        ops = tuple(rng.randint(0, MAX_VALUE) for _ in range(6))
        if ops in seen or pool_of(str(ops), seed) != split:
            continue
        seen.add(ops)
        out.append(ops)  # type: ignore[arg-type]
    return out


def _normalise_int(text: str) -> str | None:
    try:
        return str(int(text.replace(",", "")))
    except ValueError:
        return None


class ArithmeticTask(Task):
    """The paper's arithmetic task: problems are generated, so it needs no data and takes no settings."""

    name = "arithmetic"
    version = "2"  # 2: Du et al.'s prompts and operands 0..29 (1: lightly reworded prompts, 0..30)
    max_new_tokens = 160  # the bundled model writes about 100-120 tokens of work

    def load(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        n = 500 if n is None else n
        if n < 0:
            raise MftError(f"number of problems must be >= 0, got {n}")
        problems = []
        for ops in sample_problems(split, n, seed):
            a, b, c, d, e, f = ops
            problems.append(
                Problem(
                    id=f"{split}-{a}-{b}-{c}-{d}-{e}-{f}",
                    question=f"{a}+{b}*{c}+{d}-{e}*{f}",
                    answer=str(evaluate(ops)),
                    split=split,
                    meta={"ops": list(ops)},
                )
            )
        return problems

    def question_prompt(self, problem: Problem) -> str:
        return QUESTION.replace("{question}", problem.question)

    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        if not other_responses:
            return SELF_CHECK
        items = "".join(DEBATE_ITEM.replace("{response}", r) for r in other_responses)
        return DEBATE_PREFIX + items + DEBATE_SUFFIX

    def summarize_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return paper_summarize_prompt(other_responses)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        return SUMMARY_DEBATE.replace("{question}", problem.question).replace("{summary}", summary)

    def extract_answer(self, response: str) -> str | None:
        """Named steps, first hit wins: 'answer is N' (last one), \\boxed{N} (last), the last integer."""
        for pattern in (_ANSWER_IS, _BOXED):
            hits = pattern.findall(response)
            if hits:
                return _normalise_int(hits[-1])
        hits = _INT.findall(response)
        return _normalise_int(hits[-1]) if hits else None

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        na, nb = _normalise_int(a.strip()), _normalise_int(b.strip())
        return na is not None and na == nb
