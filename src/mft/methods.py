"""The methods the paper compares, in one table: what each finetunes, on which data, and how it is reported.

A method is a row key (as in `reproduce.json` and the report), the run config it runs as (`method`, whether
the debate shows summaries, and its interaction where it has its own), the models it finetunes each iteration
(its *slots*: N generators and N critics, N generators only, or one model that plays every agent), whether its
training debate is one round of independent samples, the builder of each slot's dataset from the debate
records, and its report label, row position and plot colour. Adding a method to the comparison is one
`Method(...)` here plus its builder.

Every evaluation records three readings of the society's test debate: `single` (one agent's first answer,
mean over the agents), `majority` (the vote of the N independent first answers) and `debate` (the vote of
the last round). A method's row shows the reading the paper evaluates it by (`reading`): the debate for the
multiagent methods, the majority vote of the finetuned model's N samples for Majority FT. Base, Majority and
Debate are not methods: they are the readings of the base society (iteration 0) that every run evaluates;
they have a label and a row position only (`BASELINES`). `EXTRA_ROWS` are further readings of a method's
run that the paper reports as rows of their own (Single-agent FT without debate).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mft.method_data import (
    DataBuilder,
    generator_data,
    majority_data,
    pooled_data,
    pooled_society_data,
    society_data,
    society_preference_data,
    society_prompt_data,
    star_data,
    unique_id_data,
)
from mft.objectives import Objective
from mft.records import Interaction

Slots = Literal["society", "generators", "one_model"]
Reading = Literal["single", "majority", "debate"]  # the readings of an evaluation (`results.json`)


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
    # its debates' interaction, whatever the comparison's `interaction` (None: the comparison's)
    interaction: Interaction | None = None

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
    Method(
        "ours_cooperative", "Ours (cooperative)", run_as="ours", summarize=True, slots="society",
        one_round=False, build=society_data, rank=15, colour="#aec7e8", in_default=False,
        interaction="cooperative",
    ),
)  # fmt: skip
BY_KEY = {m.key: m for m in METHODS}
COOPERATIVE = "ours_cooperative"  # finetuned in a cooperative interaction: its base society is a row too
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
    """A report row that is another reading of a method's run: after its last iteration, or of its own base
    society (iteration 0: where its debates differ from the comparison's, e.g. a cooperative interaction)."""

    key: str
    label: str
    of: str  # the method key of the run it reads
    reading: Reading
    rank: int
    base: bool = False  # its iteration 0, not its last


EXTRA_ROWS: tuple[ExtraRow, ...] = (
    # the paper's ablation: the single finetuned model answering alone, without a debate
    ExtraRow("single_ft_no_debate", "Single-agent FT (no debate)", of="single_ft", reading="single", rank=9),
    # the paper's Table 3: the cooperative interaction of the base model, before the method finetunes it
    ExtraRow("cooperative_base", "Cooperative (base)", of=COOPERATIVE, reading="debate", rank=14, base=True),
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


# The paper's names of these rows (in its Tables 1, 2, 3, 4, 5 and 7), for the report's "paper vs this run"
# table (`report/paper.py` holds the paper's numbers under these names).
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
    "Cooperative (Base)": "cooperative_base",
    "Cooperative (FT)": "ours_cooperative",
}


def of_run(method: str | None, summarize: bool, interaction: str = "debate") -> Method:
    """The table row of a run from its config's `method`, `summarize` and `interaction` (the one answer to
    "which method is this run"): `ours` with summaries is Ours, without them the ablation, cooperative Ours
    (cooperative); no method is an `ours` run (a manifest from before the setting). A method the table does
    not know is a KeyError."""
    method = method or "ours"
    if method == "ours":
        if interaction == "cooperative" and summarize:
            return BY_KEY["ours_cooperative"]
        return BY_KEY["ours" if summarize else "ours_no_summary"]
    found = next((m for m in METHODS if m.run_as == method), None)
    if found is None:
        raise KeyError(method)
    return found
