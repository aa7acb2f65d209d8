"""Datasets from debate records: pure functions, no model, no ground truth.

Generator n (D_G^n): (problem, agent n's round-1 response) where that answer equals the debate's consensus.

Critic n: agent n's whole conversation -- its round-1 answer, the prompt with the others' answers or summary,
its later responses -- where its final answer equals the consensus, split into
  D_C-: its first answer differed (it was corrected by the debate), and
  D_C+: its first answer already agreed (it kept a right answer),
mixed so that a fraction `critic_positive_fraction` (w) of the critic's examples come from D_C+, as far as
the available examples allow. Default w = 0.5: the critic sees as many "keep" as "correct" examples; with
only D_C- it would learn to always change its answer, with the natural mix (mostly D_C+) it would rarely
learn to correct. The critic trains on exactly the conversation the engine builds, so train and inference
formats cannot drift apart.

Only records of the training split may feed a dataset: a test-split record raises (leakage guard).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mft.errors import MftError
from mft.records import DebateRecord, Message

Equivalent = Callable[[str | None, str | None], bool]
Example = list[Message]


@dataclass
class CriticSplit:
    corrected: list[Example] = field(default_factory=list)  # D_C-
    kept: list[Example] = field(default_factory=list)  # D_C+


def check_train_only(records: Sequence[DebateRecord]) -> None:
    leaked = [r.problem.id for r in records if r.problem.split != "train"]
    if leaked:
        raise MftError(
            f"{len(leaked)} debate record(s) are not from the training split (e.g. {leaked[0]!r}); "
            "training data may only come from train problems",
            hint="build datasets from the train-split debate only",
        )


def generator_examples(records: Sequence[DebateRecord], slot: int, equivalent: Equivalent) -> list[Example]:
    check_train_only(records)
    out = []
    for r in records:
        if r.consensus is not None and equivalent(r.answers[0][slot], r.consensus):
            conv = r.conversations[slot]
            out.append([conv[0], conv[1]])
    return out


def critic_split(records: Sequence[DebateRecord], slot: int, equivalent: Equivalent) -> CriticSplit:
    check_train_only(records)
    split = CriticSplit()
    for r in records:
        if r.n_rounds < 2 or r.consensus is None or not equivalent(r.answers[-1][slot], r.consensus):
            continue
        conv = list(r.conversations[slot])
        if equivalent(r.answers[0][slot], r.consensus):
            split.kept.append(conv)
        else:
            split.corrected.append(conv)
    return split


def mix_critic(split: CriticSplit, positive_fraction: float, seed: str) -> list[Example]:
    """All of D_C- plus enough of D_C+ that D_C+ makes up `positive_fraction` of the result (if available).

    With no D_C- at all, D_C+ is used alone (a critic that has never needed to correct still learns to keep).
    The D_C+ subsample is drawn with `random.Random(seed)`; the result is shuffled with the same generator.
    """
    if not 0.0 <= positive_fraction <= 1.0:
        raise MftError(f"critic_positive_fraction must be in [0, 1], got {positive_fraction}")
    rng = random.Random(seed)
    kept = list(split.kept)
    if split.corrected and positive_fraction < 1.0:
        want = round(len(split.corrected) * positive_fraction / (1.0 - positive_fraction))
        kept = rng.sample(kept, min(want, len(kept)))
    examples = list(split.corrected) + kept
    rng.shuffle(examples)
    return examples
