"""The paper's arithmetic task: evaluate a+b*c+d-e*f with integers 0..30.

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
from mft.tasks.base import SPLITS, PoolTooSmall, Task, pool_of

MAX_VALUE = 30
# Each of the 31^6 operand tuples is in one of the two pools (`pool_of`, a keyed hash: about half each, the
# exact count is unknown without hashing them all). Drawing is rejection sampling, so a split must stay
# clearly below its pool's size: asking for more would never finish. This bound is about a million (some
# 70 standard deviations of the hash's split) below half of the tuples.
POOL_SIZE = (MAX_VALUE + 1) ** 6 // 2 - 1_000_000
_ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?\\?(?:boxed\{)?\s*(-?\d[\d,]*)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{\s*(-?\d[\d,]*)\s*\}")
_INT = re.compile(r"-?\d[\d,]*")


def evaluate(ops: tuple[int, int, int, int, int, int]) -> int:
    """The true value of a+b*c+d-e*f (operator precedence: the products first)."""
    a, b, c, d, e, f = ops
    return a + b * c + d - e * f


def sample_problems(split: str, n: int, seed: int = 0) -> list[tuple[int, int, int, int, int, int]]:
    """`n` distinct operand tuples from `split`'s pool, reproducible from `seed`."""
    if split not in SPLITS:
        raise MftError(f"unknown split {split!r}", hint="use 'train' or 'test'")
    if n > POOL_SIZE:
        raise PoolTooSmall("operand tuples 0..30", split, POOL_SIZE, n, "arithmetic")
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
    version = "1"
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
        # The paper's prompt for this task.
        return (
            f"What is the result of {problem.question}? "
            "Make sure to state your answer at the end of the response."
        )

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
