"""The toy model's instruction corpus, generated from a seed.

It teaches the two skills the method needs from a base model, in the exact prompt formats the debate engine
uses (the prompts come from `ArithmeticTask`, the single source):

(a) solve `a+b*c+d-e*f` step by step and state the answer;
(b) given other agents' solutions (or a summary of them) after its own, reconsider and answer again;
plus (c) summarise several agents' solutions (for the debate's summary option).

Like a real instruction-tuned model, the corpus is imperfect: each step of a first answer is a plausible
slip (a neighbouring product, a dropped carry) with probability `slip_first`, and the slip is carried
consistently into later steps. Reconsidered answers slip less (`slip_debate`) because their targets are
the true solution while the context shows several attempts: what the model can learn there is to check
each step against the other agents' work. That is what gives the bundled model room to improve by
finetuning on consensus data (fewer slips) and a real gain from debate.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from mft.records import Message, Problem
from mft.tasks.arithmetic import MAX_VALUE, ArithmeticTask, pool_of

_TASK = ArithmeticTask()


def pad(v: int) -> str:
    """Three digits with leading zeros (a sign in front when negative): 7 -> 007, -45 -> -045."""
    return f"{v:03d}" if v >= 0 else f"-{-v:03d}"


@dataclass(frozen=True)
class Chain:
    """One worked solution: step lines and the final answer (possibly with slips)."""

    lines: tuple[str, ...]
    products: tuple[int, int]
    answer: int

    def render(self) -> str:
        # the answer exactly as the last step wrote it (019, -045): a copy, parsed as the integer 19, -45
        return "\n".join(self.lines) + f"\nThe answer is {pad(self.answer)}."


# The work is written so that every step is a small lookup for a small transformer (measured: with the same
# training budget, this format got 68% of whole solutions right, the plain `27*14=378` format 16%):
#   * every number has a fixed width (two digits for operands, three for results), so the digits that
#     combine always sit at the same distance from each other;
#   * a product is split on the second factor's digits: 27*14=27*10+27*4=270+108=378 (a times-table
#     lookup and an addition, instead of a two-digit product in one go);
#   * the final answer repeats the last result as written (The answer is 019.), a plain copy.
def _product(x: int, y: int, slip: bool, rng: random.Random) -> tuple[str, int]:
    tens, units = divmod(y, 10)
    hi, lo = x * tens * 10, x * units
    if slip:  # a wrong times-table entry or a wrong sum, carried consistently
        kind = rng.random()
        if kind < 0.4:
            lo = max(0, lo + rng.choice([x, -x, 10, -10]))
        elif kind < 0.6:
            hi = max(0, hi + rng.choice([10 * x, -10 * x, 100, -100]))
    total = hi + lo
    if slip and kind >= 0.6:
        total = max(0, total + rng.choice([10, -10, 100, -100, 1, -1]))
    return f"{x:02d}*{y:02d}={x:02d}*{tens}0+{x:02d}*{units}={pad(hi)}+{pad(lo)}={pad(total)}", total


def _slip_sum(v: int, rng: random.Random) -> int:
    return v + rng.choice([1, -1, 10, -10, 100, -100])


def _difference(x: int, y: int, slip: bool, rng: random.Random) -> tuple[str, int]:
    r = x - y
    if slip:
        r = r + rng.choice([1, -1, 10, -10, 100, -100]) if rng.random() < 0.8 else -r  # or the sign
    return f"{pad(x)}-{pad(y)}={pad(r)}", r


def solve(ops: tuple[int, ...], slip: float, rng: random.Random) -> Chain:
    """Worked solution of a+b*c+d-e*f where each of the five steps slips with probability `slip`."""
    a, b, c, d, e, f = ops
    slips = [rng.random() < slip for _ in range(5)]
    line1, p1 = _product(b, c, slips[0], rng)
    line2, p2 = _product(e, f, slips[1], rng)
    s1 = _slip_sum(a + p1, rng) if slips[2] else a + p1
    s2 = _slip_sum(s1 + d, rng) if slips[3] else s1 + d
    line5, r = _difference(s2, p2, slips[4], rng)
    lines = (line1, line2, f"{pad(a)}+{pad(p1)}={pad(s1)}", f"{pad(s1)}+{pad(d)}={pad(s2)}", line5)
    return Chain(lines=lines, products=(p1, p2), answer=r)


def summarize(ops: tuple[int, ...], chains: list[Chain]) -> str:
    """The summary a summariser should write of `chains`: the distinct values of each key quantity."""
    _, b, c, _, e, f = ops

    def distinct(values: list[int]) -> str:
        seen: list[int] = []
        for v in values:
            if v not in seen:
                seen.append(v)
        return " or ".join(pad(v) for v in seen)

    return (
        f"The agents found {b:02d}*{c:02d}={distinct([ch.products[0] for ch in chains])} and "
        f"{e:02d}*{f:02d}={distinct([ch.products[1] for ch in chains])}. "
        f"Their answers were {distinct([ch.answer for ch in chains])}."
    )


@dataclass
class CorpusConfig:
    seed: int = 0
    split_seed: int = 0
    slip_first: float = 0.05
    slip_debate: float = 0.02
    # Share of drill documents in the stream (the rest are conversations). Off by default: with the same
    # compute, 50% drills made the model worse at copying operands and no better at arithmetic.
    p_drill: float = 0.0
    drill_problems: int = 4  # worked problems per drill document
    p_single: float = 0.3
    p_debate: float = 0.5
    p_summary_debate: float = 0.1
    # the rest: summariser examples


def _problem(ops: tuple[int, ...]) -> Problem:
    return Problem(id="corpus", question="{}+{}*{}+{}-{}*{}".format(*ops), answer="0")


def sample_conversation(cfg: CorpusConfig, rng: random.Random) -> list[Message]:
    """One training conversation; all assistant turns are trained on."""
    ops = _train_ops(cfg, rng)
    question = _TASK.question_prompt(_problem(ops))
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
            msgs.append(Message(role="user", content=_TASK.debate_prompt([o.render() for o in others])))
            msgs.append(Message(role="assistant", content=solve(ops, cfg.slip_debate, rng).render()))
            others = [solve(ops, cfg.slip_debate, rng) for _ in range(n_others)]
        return msgs
    if u < cfg.p_single + cfg.p_debate + cfg.p_summary_debate:
        msgs.append(Message(role="user", content=_TASK.summary_debate_prompt(summarize(ops, others))))
        msgs.append(Message(role="assistant", content=solve(ops, cfg.slip_debate, rng).render()))
        return msgs
    # summariser: a fresh conversation, as the debate engine asks for summaries
    return [
        Message(role="user", content=_TASK.summarize_prompt([o.render() for o in others])),
        Message(role="assistant", content=summarize(ops, others)),
    ]


def _train_ops(cfg: CorpusConfig, rng: random.Random) -> tuple[int, ...]:
    # Only the train pool of the default split seed: held-out test problems are never seen.
    while True:
        ops = tuple(rng.randint(0, MAX_VALUE) for _ in range(6))
        if pool_of(ops, cfg.split_seed) == "train":
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
