"""Each compared method's training data, built from the debate records: one builder per method (its row in
`mft.methods` names it), returning a `Dataset` per slot it finetunes (N generators and N critics, N
generators, or one model). A builder sees no model, and no label except STaR's rationales.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mft.data.builders import (
    Equivalent,
    Example,
    critic_pairs,
    critic_prompts,
    critic_split,
    generator_examples,
    generator_pairs,
    generator_prompts,
    majority_examples,
    mask_first_answer,
    mix_critic,
    pooled_examples,
    rationalized_examples,
    star_examples,
)
from mft.data.examples import Pair, Prompt
from mft.debate.engine import agent_id_prompt
from mft.objectives import Objective
from mft.records import DebateRecord, Message, Rationale


@dataclass(frozen=True)
class Dataset:
    """One slot's training examples (or, for a slot trained by DPO, its preference pairs; by GRPO, its
    prompts) and the counts its `sizes.json` entry reports."""

    examples: list[Example]
    sizes: dict[str, int]
    pairs: list[Pair] | None = None  # a DPO slot's data (then `examples` is empty)
    prompts: list[Prompt] | None = None  # a GRPO slot's data (then `examples` is empty)

    def items(self) -> list[Example] | list[Pair] | list[Prompt]:
        """What its data file holds."""
        if self.prompts is not None:
            return self.prompts
        return self.examples if self.pairs is None else self.pairs


@dataclass(frozen=True)
class BuildContext:
    """What a data builder may use besides the records: no model, and no labels but STaR's rationales."""

    agents: int
    critic_corrected_share: float  # w: the share of D_C- in a critic's data
    seed: int
    iteration: int
    mask_critic_first_answer: bool = False  # the critic's first answer is context, not trained on
    rationales: Sequence[Rationale] | None = None  # STaR's rationalizations (None: not made)
    # a preference method's objective per role (its generators', its critics'); the others ignore them
    generator_objective: Objective = "sft"
    critic_objective: Objective = "sft"


DataBuilder = Callable[[Sequence[DebateRecord], Equivalent, BuildContext], dict[str, Dataset]]


def society_data(records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext) -> dict[str, Dataset]:
    """Ours: generator n on D_G^n; critic n on D_C- and D_C+ mixed with a share w of D_C-."""
    out: dict[str, Dataset] = {}
    for n in range(ctx.agents):
        gen = generator_examples(records, n, eq)
        out[f"gen_{n}"] = Dataset(gen, {"examples": len(gen)})
        split = critic_split(records, n, eq)
        critic = mix_critic(split, ctx.critic_corrected_share, seed=f"{ctx.seed}:{ctx.iteration}:{n}")
        if ctx.mask_critic_first_answer:
            critic = [mask_first_answer(ex) for ex in critic]
        out[f"critic_{n}"] = Dataset(
            critic,
            {
                "examples": len(critic),
                "corrected (D_C-)": len(split.corrected),
                "kept available (D_C+)": len(split.kept),
            },
        )
    return out


def generator_data(records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext) -> dict[str, Dataset]:
    """Ours without critics: generator n on D_G^n only."""
    out: dict[str, Dataset] = {}
    for n in range(ctx.agents):
        gen = generator_examples(records, n, eq)
        out[f"gen_{n}"] = Dataset(gen, {"examples": len(gen)})
    return out


def _one_model(examples: list[Example]) -> dict[str, Dataset]:
    return {"model": Dataset(examples, {"examples": len(examples)})}


def pooled_data(records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext) -> dict[str, Dataset]:
    """Single-agent FT: every agent's generator and critic data, pooled for one model."""
    seed = f"{ctx.seed}:{ctx.iteration}"
    examples = pooled_examples(records, eq, ctx.critic_corrected_share, seed, ctx.mask_critic_first_answer)
    return _one_model(examples)


def majority_data(records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext) -> dict[str, Dataset]:
    """Majority FT: the N independent samples that agree with their vote."""
    return _one_model(majority_examples(records, eq))


def star_data(records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext) -> dict[str, Dataset]:
    """STaR: the samples whose answer matches the ground truth, plus the rationalized ones (hinted
    regenerations of the wrong samples that reach it), if any (the one builder that reads labels)."""
    right = star_examples(records, eq)
    hinted = [] if ctx.rationales is None else rationalized_examples(records, ctx.rationales, eq)
    sizes = {"examples": len(right) + len(hinted)}
    if ctx.rationales is not None:
        sizes["rationalized"] = len(hinted)
    return {"model": Dataset(right + hinted, sizes)}


def pooled_society_data(
    records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext
) -> dict[str, Dataset]:
    """Ours with pooled data: every generator on the D_G of all agents, every critic on the critic data of
    all agents (each agent's own D_C- / D_C+ mix, pooled). N models still; no agent has data of its own."""
    own = society_data(records, eq, ctx)  # each agent's own datasets, as Ours builds them
    gens = [ex for n in range(ctx.agents) for ex in own[f"gen_{n}"].examples]
    critics = [ex for n in range(ctx.agents) for ex in own[f"critic_{n}"].examples]
    out: dict[str, Dataset] = {}
    for n in range(ctx.agents):  # the same examples, each agent in its own seeded order
        rng = random.Random(f"{ctx.seed}:{ctx.iteration}:pooled:{n}")
        out[f"gen_{n}"] = Dataset(rng.sample(gens, len(gens)), {"examples": len(gens)})
        out[f"critic_{n}"] = Dataset(rng.sample(critics, len(critics)), {"examples": len(critics)})
    return out


def unique_id_data(records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext) -> dict[str, Dataset]:
    """Unique ID: one model on every agent's own generator and critic data (as Ours builds them), each
    example opened by the system message that names its agent (generation or critic agent n)."""
    examples: list[Example] = []
    for n, data in society_data(records, eq, ctx).items():
        role, slot = n.split("_")
        prompt = agent_id_prompt(int(slot), 0 if role == "gen" else 1)
        examples += [[Message(role="system", content=prompt), *ex] for ex in data.examples]
    random.Random(f"{ctx.seed}:{ctx.iteration}:unique_id").shuffle(examples)
    return _one_model(examples)


def _pairs(pairs: list[Pair]) -> Dataset:
    return Dataset([], {"examples": len(pairs)}, pairs)  # a DPO slot's "examples" are its pairs


def society_preference_data(
    records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext
) -> dict[str, Dataset]:
    """Ours (DPO): generator n and critic n each on preference pairs from its own debate replies (or, for a
    role whose objective is sft, on Ours' data for it)."""
    out = society_data(records, eq, ctx)
    for n in range(ctx.agents):
        if ctx.generator_objective == "dpo":
            out[f"gen_{n}"] = _pairs(generator_pairs(records, n, eq))
        if ctx.critic_objective == "dpo":
            out[f"critic_{n}"] = _pairs(critic_pairs(records, n, eq))
    return out


def society_prompt_data(
    records: Sequence[DebateRecord], eq: Equivalent, ctx: BuildContext
) -> dict[str, Dataset]:
    """Ours (GRPO): generator n and critic n each on the prompts it answers in its role, with the consensus
    its sampled replies are rewarded for reaching."""
    out: dict[str, Dataset] = {}
    for n in range(ctx.agents):
        for slot, prompts in (
            (f"gen_{n}", generator_prompts(records, n)),
            (f"critic_{n}", critic_prompts(records, n)),
        ):
            out[slot] = Dataset([], {"examples": len(prompts)}, prompts=prompts)  # its "examples": prompts
    return out
