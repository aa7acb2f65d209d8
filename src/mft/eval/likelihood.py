"""Likelihood-based diversity (the paper's section 4.2 and Appendix C, Figure 8), from the agents' own models.

- `held_out_nll`: the paper's likelihood diversity. Each final-round (critic) response of slot s is scored
  by the critic of every OTHER slot m != s (a held-out critic: one that did not write it), as the reply to
  the conversation slot s answered it in; the mean per-token NLL over those (m, s) pairs, per problem.
  Higher = the critics find each other's responses less predictable = more diverse.
- `pairwise_kl`: KL(p_m || p_n) between two critics' full next-token distributions on the same final-round
  responses (not a paper figure; kept as a finer view of how far apart the critics are).
- `kl_from_base`: how far each agent has moved from the base model (the paper's Figure 8), measured on the
  agent's OWN responses: generator n on slot n's round-1 responses, critic n on slot n's later-round ones.
  Estimator: at every position of such a response, the exact KL(p_agent || p_base) over the whole
  vocabulary (both models see the same prefix, teacher forcing), averaged over the response's tokens, then
  over the agent's responses of a problem. Only the prefixes are sampled (from the debate), so each term is
  >= 0, exactly 0 for an agent equal to the base, and the estimate has less variance than the sampled
  log-ratio log p_agent(y) - log p_base(y) whose expectation it is.

All come from teacher-forced scoring through a `Scorer` (the hf backend is one). `likelihood_diversity`
computes any of them together: it plans every (model, response) pair they need, so a pair two metrics share
(a critic on its own final-round response: the held-out matrix's diagonal and its KL from the base; the
base on it) is scored once, and `mft.eval.scoring_plan` scores them batched and grouped by model. The
functions of one metric plan that metric alone. `mft.eval.likelihood_reference` computes the same numbers
the simple, slow way, to check and time this one against. Every number is a mean over problems with its
standard error over problems. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from mft.errors import MftError
from mft.eval.likelihood_results import (
    HeldOutNLL,
    KLFromBase,
    Likelihoods,
    PairwiseKL,
    from_base_from,
    held_out_from,
    pairwise_kl_from,
)
from mft.eval.scoring_plan import LOGPROB_BUDGET, Request, Scored, Scorer, score_requests
from mft.records import DebateRecord, Message

__all__ = [
    "LOGPROB_BUDGET",
    "HeldOutNLL",
    "KLFromBase",
    "Likelihoods",
    "PairwiseKL",
    "Scorer",
    "held_out_nll",
    "held_out_nll_and_kl",
    "kl_from_base",
    "likelihood_diversity",
    "pairwise_kl",
]


def role_key(round_: int, slot: int) -> str:
    """Who answered: slot n's generator in round 1, slot n's critic after (the names `sizes.json` uses)."""
    return f"gen_{slot}" if round_ == 0 else f"critic_{slot}"


def response_prompt(r: DebateRecord, slot: int, round_: int) -> list[Message]:
    """What slot `slot` was shown before its reply of round `round_` (0-based): its conversation up to it."""
    conv = r.conversations[slot] if slot < len(r.conversations) else []
    seen = 0
    for i, m in enumerate(conv):
        if m.role == "assistant":
            if seen == round_:
                if i == 0:
                    break
                return list(conv[:i])
            seen += 1
    raise MftError(
        f"problem {r.problem.id}: agent slot {slot} has no prompt for round {round_ + 1} in its conversation",
        hint="diversity needs debate records written by `mft debate` (with conversations)",
    )


def final_round_agents(records: Sequence[DebateRecord]) -> list[str]:
    """The agent of each slot in the final round, the same in every record (one society)."""
    if not records:
        return []
    names = list(records[0].agents[-1]) if records[0].agents else []
    for r in records:
        got = list(r.agents[-1]) if r.agents else []
        if got != names or len(r.responses[-1]) != len(names):
            raise MftError(
                f"problem {r.problem.id}: final-round agents {got} differ from {names} "
                f"({len(r.responses[-1])} responses)",
                hint="score the debate records of one society (one iteration's eval/debate.jsonl)",
            )
    return names


def critics_of(records: Sequence[DebateRecord]) -> list[str]:
    """`final_round_agents`, of which the likelihood diversity needs at least 2."""
    names = final_round_agents(records)
    if len(names) < 2:
        raise MftError(f"likelihood diversity needs at least 2 agents, got {len(names)}")
    return names


def writers(records: Sequence[DebateRecord]) -> dict[str, str]:
    """Role key (`role_key`) -> the agent that wrote those responses, the same in every record."""
    keys: dict[str, str] = {}
    for r in records:
        for rnd, slots in enumerate(r.agents):
            for s, name in enumerate(slots):
                key = role_key(rnd, s)
                if keys.setdefault(key, name) != name:
                    raise MftError(
                        f"problem {r.problem.id}: {key} is agent {name!r} here but {keys[key]!r} before",
                        hint="score the debate records of one society (one iteration's eval/debate.jsonl)",
                    )
    return keys


def base_of(base: str | Mapping[str, str], agent: str) -> str:
    """The model `agent`'s KL is measured from: `base`, or (a mixed society) its own base in the mapping."""
    if isinstance(base, str):
        return base
    if agent not in base:
        raise MftError(f"agent {agent!r} has no base model to measure its KL from")
    return base[agent]


# -- all of them from one plan ----------------------------------------------------------------------------
class _Plan:
    """Which model scores which response (p, round, slot), and the KL pairs wanted of it."""

    def __init__(self) -> None:
        self.models: dict[tuple[int, int, int], list[str]] = {}
        self.pairs: dict[tuple[int, int, int], list[tuple[str, str]]] = {}

    def add(self, item: tuple[int, int, int], models: list[str], pairs: list[tuple[str, str]]) -> None:
        have, want = self.models.setdefault(item, []), self.pairs.setdefault(item, [])
        have.extend(m for m in models if m not in have)
        want.extend(p for p in pairs if p not in want)

    def requests(self, records: Sequence[DebateRecord]) -> tuple[list[tuple[int, int, int]], list[Request]]:
        items = list(self.models)
        return items, [
            Request(
                response_prompt(records[p], s, rnd),
                records[p].responses[rnd][s],
                tuple(self.models[(p, rnd, s)]),
                tuple(self.pairs[(p, rnd, s)]),
            )
            for p, rnd, s in items
        ]


def likelihood_diversity(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    *,
    held_out: bool = True,
    kl: bool = True,
    base: str | Mapping[str, str] | None = None,
    same_as_base: Collection[str] = (),
    chunk_size: int | None = None,
    logprob_budget: int = LOGPROB_BUDGET,
    progress: bool = False,
) -> Likelihoods:
    """The held-out NLL (`held_out`), the critics' pairwise KL (`kl`) and, with a `base`, each agent's KL
    from it, from one scoring of each (model, response) pair they need (module docstring).

    `base` and `same_as_base` as in `kl_from_base`. An agent in `same_as_base` is its base's model: it is
    scored as that base (under `base`'s name where `base` names it, else as the first such final-round
    critic), once for all of them. `chunk_size`: at most that many responses per block (None: as many as
    `logprob_budget`, bytes of log-probs held at once, allows; `mft.eval.scoring_plan`).
    """
    recs = list(records)
    base_copies = set(same_as_base)
    names = critics_of(recs) if held_out or kl else []
    first_copy = next((a for a in names if a in base_copies), None)

    def model_of(agent: str) -> str:  # who computes an agent's distributions
        if agent not in base_copies:
            return agent
        if isinstance(base, str):
            return base
        if isinstance(base, Mapping):  # copies of several bases: each is its own base's
            return base.get(agent, agent)
        return first_copy or agent

    plan = _Plan()
    critics = [model_of(a) for a in names]
    for p, r in enumerate(recs):
        for s in range(len(names)):
            pairs = [(a, b) for a in critics for b in critics if a != b] if kl else []
            plan.add((p, r.n_rounds - 1, s), list(dict.fromkeys(critics)), pairs)
    keys = writers(recs) if base is not None else {}
    refs = ({base} if isinstance(base, str) else set(base.values())) if base is not None else set()
    if base is not None:
        for p, r in enumerate(recs):
            for rnd, slots in enumerate(r.agents):
                for s, name in enumerate(slots):
                    if name not in refs and name not in base_copies:  # else: the base itself, KL 0
                        own, ref = model_of(name), base_of(base, name)
                        plan.add((p, rnd, s), [own, ref], [(own, ref)])
    items, requests = plan.requests(recs)
    scored = dict(
        zip(
            items,
            score_requests(requests, scorer, budget=logprob_budget, most=chunk_size, progress=progress),
            strict=True,
        )
    )

    def last(p: int, s: int) -> Scored:
        return scored[(p, recs[p].n_rounds - 1, s)]

    n = len(names)
    out_held = None
    if held_out:
        nll = [[[last(p, s).nll[critics[m]] for s in range(n)] for m in range(n)] for p in range(len(recs))]
        out_held = held_out_from(nll, names, recs[0].n_rounds)
    out_kl = None
    if kl:
        per_problem = [
            [
                [
                    sum(last(p, s).kl[(critics[a], critics[b])] for s in range(n)) / n
                    if critics[a] != critics[b]
                    else 0.0  # one model in two slots: KL 0
                    for b in range(n)
                ]
                for a in range(n)
            ]
            for p in range(len(recs))
        ]
        out_kl = pairwise_kl_from(per_problem, names)
    out_base = None
    if base is not None:
        values: dict[str, list[list[float]]] = {k: [[] for _ in recs] for k in keys}
        for p, r in enumerate(recs):
            for rnd, slots in enumerate(r.agents):
                for s, name in enumerate(slots):
                    value = 0.0  # the base itself: 0, not scored
                    if name not in refs and name not in base_copies:
                        value = scored[(p, rnd, s)].kl[(model_of(name), base_of(base, name))]
                    values[role_key(rnd, s)][p].append(value)
        out_base = from_base_from(values, keys, len(recs))
    return Likelihoods(out_held, out_kl, out_base)


# -- one metric at a time -----------------------------------------------------------------------------------
def held_out_nll(
    records: Sequence[DebateRecord], scorer: Scorer, *, chunk_size: int | None = None, progress: bool = False
) -> HeldOutNLL:
    """The paper's likelihood diversity: the mean per-token NLL of each final-round (critic) response under
    the critics of the other slots, never under the critic that wrote it; per problem the mean over the
    ordered (scorer, writer) pairs of distinct slots, then mean ± standard error over problems.

    The agents are read from the records (`agents[-1]`); `scorer` must know them. In a single-model method
    every slot holds the same model, so its held-out critic has the writer's weights.
    """
    got = likelihood_diversity(records, scorer, kl=False, chunk_size=chunk_size, progress=progress)
    assert got.held_out is not None
    return got.held_out


def pairwise_kl(
    records: Sequence[DebateRecord], scorer: Scorer, *, chunk_size: int | None = None, progress: bool = False
) -> PairwiseKL:
    """For each ordered pair (m, n) of final-round slots, KL(p_m || p_n) between the two critics' full
    next-token distributions, averaged over the tokens of a response, then over all final-round responses
    of a problem; the mean over pairs has its standard error over problems. `matrix[m][n]` (diagonal 0)."""
    got = likelihood_diversity(records, scorer, held_out=False, chunk_size=chunk_size, progress=progress)
    assert got.kl is not None
    return got.kl


def held_out_nll_and_kl(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    *,
    same_as_base: Collection[str] = (),
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[HeldOutNLL, PairwiseKL]:
    """`held_out_nll` and `pairwise_kl` from one shared scoring pass; the agents in `same_as_base` are
    known to be one model (the base), scored once for all of them."""
    got = likelihood_diversity(
        records, scorer, same_as_base=same_as_base, chunk_size=chunk_size, progress=progress
    )
    assert got.held_out is not None and got.kl is not None
    return got.held_out, got.kl


def kl_from_base(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    base: str | Mapping[str, str],
    *,
    same_as_base: Collection[str] = (),
    chunk_size: int | None = None,
    progress: bool = False,
) -> KLFromBase:
    """Each agent's per-token KL(p_agent || p_base) on its own responses of every round (see the module
    docstring for the estimator); keys `gen_<n>` (round 1 of slot n) and `critic_<n>` (later rounds).

    `base` is an agent name the scorer knows that is the base model itself, or (a mixed society) a mapping
    from each agent to the one that is its own base; agents named in `same_as_base` are known to be their
    base (no adapter) and get 0 without being scored.
    """
    got = likelihood_diversity(
        records,
        scorer,
        held_out=False,
        kl=False,
        base=base,
        same_as_base=same_as_base,
        chunk_size=chunk_size,
        progress=progress,
    )
    assert got.from_base is not None
    return got.from_base
