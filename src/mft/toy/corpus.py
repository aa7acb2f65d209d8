"""The toy model's instruction corpus, generated from a seed.

It teaches the two skills the method needs from a base model, in the exact prompt formats the debate engine
uses (the prompts come from `ArithmeticTask`, the single source):

(a) solve `a+b*c+d-e*f` step by step and state the answer;
(b) given other agents' solutions (or a summary of them) after its own, reconsider and answer again;
plus (c) summarise several agents' solutions (for the debate's summary option).

Like a real instruction-tuned model, the corpus is imperfect: a first answer makes each of three slips (a
digit off by one in a step's result, carried consistently into later steps) with probability `slip_first`.
Reconsidered answers slip less (`slip_debate`) because their targets are the true solution while the
context shows several attempts. That gives the bundled model room to improve by finetuning on consensus
data (fewer slips) and a real gain from debate: the arithmetic is written so that the model makes far
fewer errors of its own than in the usual notation (the notes on the format below), so much of what a
first answer gets wrong is a sampled slip, independent from agent to agent, which a vote and a second
look can repair.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mft.records import Message, Problem
from mft.tasks.arithmetic import MAX_VALUE, ArithmeticTask
from mft.tasks.base import pool_of

_TASK = ArithmeticTask()


def pad(v: int) -> str:
    """Three digits with leading zeros (a sign in front when negative): 7 -> 007, -45 -> -045."""
    return f"{v:03d}" if v >= 0 else f"-{-v:03d}"


def rev(v: int) -> str:
    """`pad(v)` with its digits least significant first (the sign stays in front): 45 -> 540, -501 -> -105."""
    digits = f"{abs(v):03d}"[::-1]
    return digits if v >= 0 else f"-{digits}"


@dataclass(frozen=True)
class Chain:
    """One worked solution: step lines and the final answer (possibly with slips)."""

    lines: tuple[str, ...]
    products: tuple[int, int]
    answer: int

    def render(self) -> str:
        # the last result turned back to the usual order (-105 -> -501; 910 -> 019, read as 19)
        return "\n".join(self.lines) + f"\nThe answer is {pad(self.answer)}."


# The work is written so that every step is a small lookup for a small transformer:
#   * every number has a fixed width (two digits for operands, three for results), so the digits that
#     combine always sit at the same distance from each other;
#   * a product is split on the second factor's digits: 27*14=27*10+27*4=072+801=873 (two times-table
#     lookups and an addition, instead of a two-digit product in one go);
#   * results are written least significant digit first (378 as 873), as in "Teaching Arithmetic to Small
#     Transformers" (Lee et al., 2023): each digit then depends only on the digits already written and the
#     carry from the column just before it, instead of on every column to its right. Written the usual
#     way (378), the previous bundled model got its additions right 90% of the time and the final
#     subtraction 46%, and its errors on one problem were the same from answer to answer
#     (docs/toy-model.md), so neither a vote nor a second look could repair them;
#   * the final answer turns the last result back to the usual order (The answer is -501.).
#
# A slip is one digit off by one in one column of a step's result, carried consistently into later steps:
# the tens of the first product, the hundreds of the second, the units of the difference. Each slip is a
# single alternative token at a single place, so at temperature 1 with top-p 0.9 a slip learned at
# probability 0.2 is sampled at about that rate (one spread over many tokens would fall under top-p's cut),
# and the three slips move the answer by different amounts (+10, -100, +1), so two agents that slip
# differently do not agree on a wrong answer.
SLIP_OFFSETS = (10, 100, 1)


def _product(x: int, y: int, offset: int) -> tuple[str, int]:
    tens, units = divmod(y, 10)
    hi, lo = x * tens * 10, x * units
    total = hi + lo + offset
    return f"{x:02d}*{y:02d}={x:02d}*{tens}0+{x:02d}*{units}={rev(hi)}+{rev(lo)}={rev(total)}", total


def solve(ops: tuple[int, ...], slip: float, rng: random.Random) -> Chain:
    """Worked solution of a+b*c+d-e*f where each of the three slips happens with probability `slip`."""
    return chain(ops, tuple(off if rng.random() < slip else 0 for off in SLIP_OFFSETS))


def chain(ops: tuple[int, ...], offsets: tuple[int, ...]) -> Chain:
    """The worked solution with the three slips' offsets (0: no slip) applied."""
    a, b, c, d, e, f = ops
    o1, o2, o5 = offsets
    line1, p1 = _product(b, c, o1)
    line2, p2 = _product(e, f, o2)
    s1 = a + p1
    s2 = s1 + d
    r = s2 - p2 + o5
    lines = (
        line1,
        line2,
        f"{rev(a)}+{rev(p1)}={rev(s1)}",
        f"{rev(s1)}+{rev(d)}={rev(s2)}",
        f"{rev(s2)}-{rev(p2)}={rev(r)}",
    )
    return Chain(lines=lines, products=(p1, p2), answer=r)


def summarize(ops: tuple[int, ...], chains: list[Chain]) -> str:
    """The summary a summariser should write of `chains`: the distinct values of each key quantity."""
    _, b, c, _, e, f = ops

    def distinct(values: list[int], show: Callable[[int], str] = pad) -> str:
        seen: list[int] = []
        for v in values:
            if v not in seen:
                seen.append(v)
        return " or ".join(show(v) for v in seen)

    return (
        f"The agents found {b:02d}*{c:02d}={distinct([ch.products[0] for ch in chains], rev)} and "
        f"{e:02d}*{f:02d}={distinct([ch.products[1] for ch in chains], rev)}. "
        f"Their answers were {distinct([ch.answer for ch in chains])}."
    )


@dataclass
class CorpusConfig:
    seed: int = 0
    split_seed: int = 0
    # probability of each of a first answer's three slips (SLIP_OFFSETS), and of a reconsidered answer's
    slip_first: float = 0.2
    slip_debate: float = 0.02
    # Share of drill documents in the stream (the rest are conversations). Off by default: with the same
    # compute, 50% drills made the model worse at copying operands and no better at arithmetic.
    p_drill: float = 0.0
    drill_problems: int = 4  # worked problems per drill document
    p_single: float = 0.3
    # 0.5 / 0.1 for task version 1; on version 2's summary prompt (the question restated) a tenth of the
    # conversations left the summarised round's products right 72% of the time (98% after the opinions)
    p_debate: float = 0.35
    p_summary_debate: float = 0.25
    # the rest: summariser examples


def _problem(ops: tuple[int, ...]) -> Problem:
    return Problem(id="corpus", question="{}+{}*{}+{}-{}*{}".format(*ops), answer="0")


def sample_conversation(cfg: CorpusConfig, rng: random.Random) -> list[Message]:
    """One training conversation; all assistant turns are trained on."""
    ops = _train_ops(cfg, rng)
    problem = _problem(ops)
    question = _TASK.question_prompt(problem)
    u = rng.random()
    own = solve(ops, cfg.slip_first, rng)
    msgs = [Message(role="user", content=question), Message(role="assistant", content=own.render())]
    if u < cfg.p_single:
        return msgs
    n_others = rng.choices([1, 2, 3], weights=[1, 8, 1])[0]
    others = [solve(ops, cfg.slip_first, rng) for _ in range(n_others)]
    if u < cfg.p_single + cfg.p_debate:
        rounds = rng.choices([2, 3], weights=[5, 1])[0]
        for _ in range(rounds - 1):
            msgs.append(
                Message(role="user", content=_TASK.debate_prompt(problem, [o.render() for o in others]))
            )
            msgs.append(Message(role="assistant", content=solve(ops, cfg.slip_debate, rng).render()))
            others = [solve(ops, cfg.slip_debate, rng) for _ in range(n_others)]
        return msgs
    if u < cfg.p_single + cfg.p_debate + cfg.p_summary_debate:
        msgs.append(
            Message(role="user", content=_TASK.summary_debate_prompt(problem, summarize(ops, others)))
        )
        msgs.append(Message(role="assistant", content=solve(ops, cfg.slip_debate, rng).render()))
        return msgs
    # summariser: a fresh conversation, as the debate engine asks for summaries
    return [
        Message(role="user", content=_TASK.summarize_prompt(problem, [o.render() for o in others])),
        Message(role="assistant", content=summarize(ops, others)),
    ]


def _train_ops(cfg: CorpusConfig, rng: random.Random) -> tuple[int, ...]:
    # Only the train pool of the default split seed: held-out test problems are never seen.
    while True:
        ops = tuple(rng.randint(0, MAX_VALUE) for _ in range(6))
        if pool_of(str(ops), cfg.split_seed) == "train":
            return ops


def sample_drill(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    """Arithmetic drill: the (slip-free) step lines of a few problems, outside any chat.

    The "textbook" part of the corpus: it is where the model learns its multiplication table and carries,
    cheaply (short lines, loss on the results only), before it learns to use them in conversations.
    """
    return [line for _ in range(cfg.drill_problems) for line in solve(_train_ops(cfg, rng), 0.0, rng).lines]


def stream(cfg: CorpusConfig) -> Iterator[list[Message] | list[str]]:
    """Endless seeded stream of training items: conversations (list of Message) or drills (list of str)."""
    rng = random.Random(f"toy-corpus:{cfg.seed}")
    while True:
        if cfg.p_drill > 0 and rng.random() < cfg.p_drill:
            yield sample_drill(cfg, rng)
        else:
            yield sample_conversation(cfg, rng)
