"""Datasets from debate records: pure functions, no model, no ground truth.

Generator n (D_G^n): (problem, agent n's round-1 response) where that answer equals the debate's consensus.

Critic n: agent n's whole conversation -- its round-1 answer, the prompt with the others' answers or summary,
its later responses -- where its final answer equals the consensus, split into
  D_C-: its first answer differed (it was corrected by the debate), and
  D_C+: its first answer already agreed (it kept a right answer),
mixed as the paper's D_C = w D_C- + (1 - w) D_C+, w = `critic_corrected_share`: all of D_C- and enough
of D_C+ that D_C- makes up a share w of the critic's data (less D_C+ where too little is available, so the
share of D_C- is never below w); w = 1 is D_C- only, w = 0 is D_C+ only. Default w = 2/3, the official
code's mix: with only D_C- a critic learns to always change its answer, with the natural mix (mostly D_C+)
it rarely learns to correct. The critic trains on exactly the conversation the engine builds, so train and
inference formats cannot drift apart; `mask_first_answer` keeps its first answer out of the loss.

Preference pairs (the DPO objective, docs/dpo.md), also from the consensus alone: agent n's own reply is one
side of each of its pairs and another agent's reply of the same round the other, the one that agrees with
the consensus chosen and the one that does not rejected (`generator_pairs`, `critic_pairs`).

Prompts (the GRPO objective, docs/grpo.md): each agent samples replies in its role and is rewarded for the
consensus, so its data is the prompts it answers there with the debate's consensus -- generator n the
round-1 question, critic n its own context before its final-round reply (`generator_prompts`,
`critic_prompts`), on every problem with a consensus.

Only records of the training split may feed a dataset: a test-split record raises (leakage guard).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mft.data.examples import Pair, Prompt
from mft.errors import MftError
from mft.records import DebateRecord, Message, Rationale

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


def mix_critic(split: CriticSplit, corrected_share: float, seed: str) -> list[Example]:
    """D_C- and D_C+ mixed so that D_C- is a share `corrected_share` (w) of the result.

    0 < w <= 1: all of D_C- plus round(|D_C-| (1 - w) / w) of D_C+ (all of D_C+ where it has fewer), so an
    agent without D_C- gets no critic data, as in the official code. w = 0: all of D_C+ and none of D_C-.
    The D_C+ subsample is drawn with `random.Random(seed)`; the result is shuffled with the same generator.
    """
    if not 0.0 <= corrected_share <= 1.0:
        raise MftError(f"critic_corrected_share must be in [0, 1], got {corrected_share}")
    rng = random.Random(seed)
    if corrected_share == 0.0:
        examples = list(split.kept)
    else:
        want = round(len(split.corrected) * (1.0 - corrected_share) / corrected_share)
        examples = list(split.corrected) + rng.sample(list(split.kept), min(want, len(split.kept)))
    rng.shuffle(examples)
    return examples


def mask_first_answer(example: Example) -> Example:
    """The conversation with its first assistant turn kept out of the loss (`weight` 0, as in the
    fine-tuning API's chat format); every later answer is still trained on."""
    first = next((i for i, m in enumerate(example) if m.role == "assistant"), None)
    if first is None:
        return list(example)
    return [m.model_copy(update={"weight": 0}) if i == first else m for i, m in enumerate(example)]


# -- preference pairs (DPO) ------------------------------------------------------------------------------
def _pairs(
    record: DebateRecord, slot: int, round_: int, prompt: list[Message], equivalent: Equivalent
) -> list[Pair]:
    """Agent `slot`'s pairs on `prompt` from round `round_`'s replies: its own reply against each other
    agent's reply on the other side of the consensus (a missing answer is on the side that disagrees),
    in slot order. None where the consensus is None or nobody disagrees with it."""
    if record.consensus is None:
        return []
    replies = record.responses[round_]
    agrees = [equivalent(a, record.consensus) for a in record.answers[round_]]
    out = []
    for other in range(record.n_agents):
        if other == slot or agrees[other] == agrees[slot]:
            continue
        good, bad = (slot, other) if agrees[slot] else (other, slot)
        out.append(
            Pair(
                prompt,
                Message(role="assistant", content=replies[good]),
                Message(role="assistant", content=replies[bad]),
            )
        )
    return out


def generator_pairs(records: Sequence[DebateRecord], slot: int, equivalent: Equivalent) -> list[Pair]:
    """Generator n's preference pairs: on the round-1 question (the same prompt for every agent), its own
    round-1 reply against each other agent's round-1 reply that falls on the other side of the final
    consensus -- chosen the one whose answer is the consensus, rejected the one whose answer is not."""
    check_train_only(records)
    out: list[Pair] = []
    for r in records:
        out += _pairs(r, slot, 0, [r.conversations[slot][0]], equivalent)
    return out


def critic_pairs(records: Sequence[DebateRecord], slot: int, equivalent: Equivalent) -> list[Pair]:
    """Critic n's preference pairs: on its own context before its final-round reply (its earlier answers,
    the others' answers or their summary), its own final reply against each other agent's final reply
    that falls on the other side of the consensus, chosen the one that agrees with it."""
    check_train_only(records)
    out: list[Pair] = []
    for r in records:
        if r.n_rounds >= 2:
            out += _pairs(r, slot, r.n_rounds - 1, list(r.conversations[slot][:-1]), equivalent)
    return out


# -- prompts (GRPO) ---------------------------------------------------------------------------------------
def generator_prompts(records: Sequence[DebateRecord], slot: int) -> list[Prompt]:
    """Generator n's prompts: the round-1 question of every problem with a consensus, and that consensus
    (every agent's round-1 prompt is the same; the slot is kept for symmetry with the critic's)."""
    check_train_only(records)
    return [Prompt([r.conversations[slot][0]], r.consensus) for r in records if r.consensus is not None]


def critic_prompts(records: Sequence[DebateRecord], slot: int) -> list[Prompt]:
    """Critic n's prompts: its own context before its final-round reply (its earlier answers, the others'
    answers or their summary) on every problem with a consensus and a later round, and that consensus."""
    check_train_only(records)
    return [
        Prompt(list(r.conversations[slot][:-1]), r.consensus)
        for r in records
        if r.consensus is not None and r.n_rounds >= 2
    ]


# -- single-model baselines ------------------------------------------------------------------------------
def round1_examples(
    records: Sequence[DebateRecord], keep: Callable[[DebateRecord, str | None], bool]
) -> list[Example]:
    """(question, response) of every agent's round-1 answer for which `keep(record, answer)` holds."""
    check_train_only(records)
    out = []
    for r in records:
        for slot in range(r.n_agents):
            if keep(r, r.answers[0][slot]):
                conv = r.conversations[slot]
                out.append([conv[0], Message(role="assistant", content=r.responses[0][slot])])
    return out


def majority_examples(records: Sequence[DebateRecord], equivalent: Equivalent) -> list[Example]:
    """Majority FT: round-1 responses that agree with the vote of the N independent round-1 answers."""
    return round1_examples(
        records, lambda r, a: r.round_consensus[0] is not None and equivalent(a, r.round_consensus[0])
    )


def star_examples(records: Sequence[DebateRecord], equivalent: Equivalent) -> list[Example]:
    """STaR: round-1 responses whose answer matches the GROUND TRUTH.

    The one builder that reads labels, as the baseline requires; still train-split records only.
    """
    return round1_examples(records, lambda r, a: equivalent(a, r.problem.answer))


def wrong_samples(records: Sequence[DebateRecord], equivalent: Equivalent) -> list[tuple[DebateRecord, int]]:
    """(record, slot) of every round-1 sample whose answer is not the ground truth (none counts as wrong):
    what STaR rationalizes, in record then slot order."""
    check_train_only(records)
    return [
        (r, slot)
        for r in records
        for slot in range(r.n_agents)
        if not equivalent(r.answers[0][slot], r.problem.answer)
    ]


def rationalized_examples(
    records: Sequence[DebateRecord], rationales: Sequence[Rationale], equivalent: Equivalent
) -> list[Example]:
    """STaR's rationalization: each wrong round-1 sample's hinted regeneration that reaches the ground truth,
    as (the round-1 prompt WITHOUT the hint, the regenerated response)."""
    by_sample = {(x.problem_id, x.slot): x for x in rationales}
    out = []
    for r, slot in wrong_samples(records, equivalent):
        x = by_sample.get((r.problem.id, slot))
        if x is not None and equivalent(x.answer, r.problem.answer):
            out.append([r.conversations[slot][0], Message(role="assistant", content=x.response)])
    return out


def pooled_examples(
    records: Sequence[DebateRecord],
    equivalent: Equivalent,
    corrected_share: float,
    seed: str,
    mask_critic_first_answer: bool = False,
) -> list[Example]:
    """Single-agent FT: every agent's generator and critic data from the debate, pooled for one model."""
    out: list[Example] = []
    n_agents = records[0].n_agents if records else 0
    for slot in range(n_agents):
        out += generator_examples(records, slot, equivalent)
        critic = mix_critic(critic_split(records, slot, equivalent), corrected_share, f"{seed}:{slot}")
        out += [mask_first_answer(ex) for ex in critic] if mask_critic_first_answer else critic
    random.Random(seed).shuffle(out)
    return out
