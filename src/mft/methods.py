"""The methods the paper compares, in one table: what each finetunes, on which data, and how it is reported.

A method is a row key (as in `reproduce.json` and the report), the run config it runs as (`method` and
whether the debate shows summaries), the models it finetunes each iteration (its *slots*: N generators and
N critics, N generators only, or one model that plays every agent), whether its training debate is one round
of independent samples, the builder of each slot's dataset from the debate records, and its report label,
row position and plot colour. Adding a method to the comparison is one `Method(...)` here plus its builder.

Every evaluation records three readings of the society's test debate: `single` (one agent's first answer,
mean over the agents), `majority` (the vote of the N independent first answers) and `debate` (the vote of
the last round). A method's row shows the reading the paper evaluates it by (`reading`): the debate for the
multiagent methods, the majority vote of the finetuned model's N samples for Majority FT. Base, Majority and
Debate are not methods: they are the readings of the base society (iteration 0) that every run evaluates;
they have a label and a row position only (`BASELINES`). `EXTRA_ROWS` are further readings of a method's
run that the paper reports as rows of their own (Single-agent FT without debate).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

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
Slots = Literal["society", "generators", "one_model"]
Reading = Literal["single", "majority", "debate"]  # the readings of an evaluation (`results.json`)


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


@dataclass(frozen=True)
class Method:
    key: str  # row key: reproduce.json, the report, the run sub-directory of `mft reproduce`
    label: str  # the report's row label
    run_as: str  # RunConfig.method: what a run with this method does
    summarize: bool  # the debate shows summaries of the others' answers (as `mft reproduce` runs it)
    slots: Slots  # the models finetuned each iteration
    one_round: bool  # the training debate is one round of N independent samples
    build: DataBuilder
    rank: int  # position of its row in the report (the paper's Table 1 order, then the ablations)
    colour: str  # its colour in every plot
    about: str = ""  # what it finetunes on what, for `--method`'s help (where it is a run's `method`)
    # the finetuned model is told which agent it plays: a system message naming the role and number
    # (`debate.engine.agent_id_prompt`) opens every request it answers and every example it trains on
    agent_ids: bool = False
    in_default: bool = True  # run by a plain `mft reproduce` (the others only when named in --methods)
    rationalizes: bool = False  # regenerates its wrong samples with the gold answer as a hint (STaR)
    reading: Reading = "debate"  # the reading its report row shows
    # its generators and critics are finetuned by the objectives `ft_objective_generator` /
    # `ft_objective_critic` (DPO on preference pairs by default); every other method's models by `objective`
    preference: bool = False
    objective: Objective = "sft"  # how its models are finetuned (a preference method: see above)

    def training_rounds(self, rounds: int) -> int:
        """Rounds of its training debate, of a run configured with `rounds`: one round of N independent
        samples where the method trains on those (Majority FT, STaR), else all of them."""
        return 1 if self.one_round else rounds

    def tells_ids(self, iteration: int) -> bool:
        """Whether the society iteration `iteration` produced (0: the base) is told which agent each request
        is for: only a model finetuned with agent ids (Unique ID, iteration >= 1); the base model never saw
        them, so it debates as in every method."""
        return self.agent_ids and iteration >= 1

    def slot_names(self, agents: int) -> list[str]:
        """The models finetuned each iteration (their dataset and adapter directories are named so)."""
        if self.slots == "one_model":
            return ["model"]
        gens = [f"gen_{n}" for n in range(agents)]
        return gens if self.slots == "generators" else gens + [f"critic_{n}" for n in range(agents)]


# In the order `mft reproduce` runs them: Ours first, so the others can reuse its shared stages, and
# iteration 0 is read from the first of these that has it.
METHODS: tuple[Method, ...] = (
    Method(
        "ours", "Ours", run_as="ours", summarize=True, slots="society", one_round=False,
        build=society_data, rank=5, colour="#d62728",
        about="N generators + N critics, each on its own debate data",
    ),
    Method(
        "ours_no_summary", "Ours (no summary)", run_as="ours", summarize=False, slots="society",
        one_round=False, build=society_data, rank=6, colour="#ff7f0e",
    ),
    Method(
        "ours_no_critic", "Ours (no critics)", run_as="ours_no_critic", summarize=True, slots="generators",
        one_round=False, build=generator_data, rank=7, colour="#9467bd",
        about="generators only",
    ),
    Method(
        "single_ft", "Single-agent FT", run_as="single_ft", summarize=True, slots="one_model",
        one_round=False, build=pooled_data, rank=8, colour="#1f77b4",
        about="one model on all the debate data",
    ),
    Method(
        "majority_ft", "Majority FT", run_as="majority_ft", summarize=True, slots="one_model",
        one_round=True, build=majority_data, rank=4, colour="#2ca02c",
        about="one model on its N samples that agree with their vote",
        reading="majority",  # the paper evaluates it as it is trained: a majority vote of its N samples
    ),
    Method(
        "star", "STaR", run_as="star", summarize=True, slots="one_model", one_round=True,
        build=star_data, rank=3, colour="#8c564b",
        about="one model on its samples that match the ground truth (and, with star_rationalize, on its "
        "hinted regenerations of the others that do)",
        rationalizes=True,
    ),
    # Experiments beyond the main comparison: run by `mft reproduce --methods ...` only.
    Method(
        "ours_pooled", "Ours (pooled data)", run_as="ours_pooled", summarize=True, slots="society",
        one_round=False, build=pooled_society_data, rank=10, colour="#17becf", in_default=False,
        about="N generators + N critics, each on the pooled data of all agents",
    ),
    Method(
        "unique_id", "Unique ID", run_as="unique_id", summarize=True, slots="one_model", one_round=False,
        build=unique_id_data, rank=11, colour="#7f7f7f", agent_ids=True, in_default=False,
        about="one model on every agent's data, told which agent it plays",
    ),
    Method(
        "ours_dpo", "Ours (DPO)", run_as="ours_dpo", summarize=True, slots="society", one_round=False,
        build=society_preference_data, rank=12, colour="#bcbd22", in_default=False, preference=True,
        about="N generators + N critics, each trained by DPO on preference pairs from its own debate replies",
    ),
    Method(
        "ours_grpo", "Ours (GRPO)", run_as="ours_grpo", summarize=True, slots="society", one_round=False,
        build=society_prompt_data, rank=13, colour="#e377c2", in_default=False, objective="grpo",
        about="N generators + N critics, each trained by GRPO on replies it samples in its role, rewarded "
        "for agreeing with the debate's consensus",
    ),
)  # fmt: skip
BY_KEY = {m.key: m for m in METHODS}
DEFAULT_KEYS: tuple[str, ...] = tuple(m.key for m in METHODS if m.in_default)  # a plain `mft reproduce`
# RunConfig.method's choices: what a single run can be asked to do (and its help text).
RUN_METHODS: tuple[str, ...] = tuple(dict.fromkeys(m.run_as for m in METHODS))
RUN_METHODS_HELP = ", ".join(f"{m.run_as} ({m.about})" for m in METHODS if m.about)
# The run methods that use `star_rationalize` (for the others it does nothing).
RATIONALIZING: frozenset[str] = frozenset(m.run_as for m in METHODS if m.rationalizes)
# The run methods that use `ft_objective_generator` / `ft_objective_critic` (the others train by SFT).
PREFERENCE: tuple[str, ...] = tuple(m.run_as for m in METHODS if m.preference)

# The base society's readings (iteration 0 of every run), each a report row: key -> (label, rank).
BASELINES: dict[str, tuple[str, int]] = {
    "base": ("Base", 0),
    "majority": ("Majority", 1),
    "debate": ("Debate", 2),
}


@dataclass(frozen=True)
class ExtraRow:
    """A report row that is another reading of a method's run."""

    key: str
    label: str
    of: str  # the method key of the run it reads
    reading: Reading
    rank: int


EXTRA_ROWS: tuple[ExtraRow, ...] = (
    # the paper's ablation: the single finetuned model answering alone, without a debate
    ExtraRow("single_ft_no_debate", "Single-agent FT (no debate)", of="single_ft", reading="single", rank=9),
)


def reading_of(key: str) -> Reading:
    """The reading a row of method `key` shows (the debate for a method the table does not know)."""
    return BY_KEY[key].reading if key in BY_KEY else "debate"


# Every row's label, and the rows in the report's order (methods, baselines and extra rows alike).
LABELS: dict[str, str] = {
    **{k: v[0] for k, v in BASELINES.items()},
    **{m.key: m.label for m in METHODS},
    **{r.key: r.label for r in EXTRA_ROWS},
}
_RANKS = {
    **{k: v[1] for k, v in BASELINES.items()},
    **{m.key: m.rank for m in METHODS},
    **{r.key: r.rank for r in EXTRA_ROWS},
}
REPORT_ORDER: tuple[str, ...] = tuple(sorted(_RANKS, key=_RANKS.__getitem__))


def in_report_order(keys: Iterable[str]) -> list[str]:
    """Row keys in the report's order, each once; keys the report does not know after, as first given."""
    given = list(dict.fromkeys(keys))
    return [k for k in REPORT_ORDER if k in given] + [k for k in given if k not in REPORT_ORDER]


# The paper's claims about the methods, which the report's "What holds" reads: Ours beats each of these
# (its Tables 1 and 2 and ablations, in the report's order), and this one saturates over iterations while
# Ours keeps rising (its Fig. 1).
BEATEN_BY_OURS: tuple[str, ...] = ("star", "majority_ft", "ours_no_summary", "ours_no_critic", "single_ft")
SATURATES = "single_ft"


# The paper's names of these rows (in its Tables 1, 2, 4 and 5), for the report's "paper vs this run" table
# (`report/paper.py` holds the paper's numbers under these names).
PAPER_NAMES: dict[str, str] = {
    "Base": "base",
    "Majority": "majority",
    "Debate": "debate",
    "STaR": "star",
    "Majority FT": "majority_ft",
    "Ours": "ours",
    "Multiagent FT w/o summary": "ours_no_summary",
    "Multiagent FT w/o critic": "ours_no_critic",
    "Single-agent FT": "single_ft",
    "Single-agent FT w/o debate": "single_ft_no_debate",
    "Unique ID": "unique_id",
}


def of_run(method: str | None, summarize: bool) -> Method:
    """The table row of a run from its config's `method` and `summarize` (the one answer to "which method
    is this run"): `ours` with summaries is Ours, without them the ablation; no method is an `ours` run
    (a manifest from before the setting). A method the table does not know is a KeyError."""
    method = method or "ours"
    if method == "ours":
        return BY_KEY["ours" if summarize else "ours_no_summary"]
    found = next((m for m in METHODS if m.run_as == method), None)
    if found is None:
        raise KeyError(method)
    return found
