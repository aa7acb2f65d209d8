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

All come from teacher-forced scoring through a `Scorer` (the hf backend is one). Every number is a mean over
problems with its standard error over problems. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mft.errors import MftError
from mft.eval.metrics import Estimate, mean_se, strict_json
from mft.records import DebateRecord, Message

if TYPE_CHECKING:
    import torch


class Scorer(Protocol):
    """An agent's next-token distributions on given replies (teacher forcing); `HFBackend` is one.

    For each example i: `(token_ids [T], logprobs [T, V])` -- the T tokens of `responses[i]` as the chat
    template renders it as the assistant reply to `prompts[i]` (the tokens generation would produce, end of
    turn included), and agent `agent`'s log-softmax over the whole vocabulary at each of those positions.
    """

    def score_responses(
        self, agent: str, prompts: list[list[Message]], responses: list[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True)
class HeldOutNLL:
    """Per-token NLL of the final-round responses under held-out critics (scorer slot != writer slot)."""

    estimate: Estimate  # per problem: mean over (scorer m, writer s), m != s; standard error over problems
    matrix: list[
        list[float]
    ]  # matrix[m][s]: slot s's responses under slot m's critic (diagonal: own, unused)
    agents: list[str]  # the final-round agent of each slot
    round: int  # the round scored, counted from 1

    def as_dict(self) -> dict[str, Any]:
        return {
            **strict_json(self.estimate),
            "matrix": self.matrix,
            "agents": self.agents,
            "round": self.round,
        }


@dataclass(frozen=True)
class PairwiseKL:
    """Mean over ordered pairs (m, n), m != n, of KL(p_m || p_n) per response token."""

    estimate: Estimate  # mean over pairs, standard error over problems
    matrix: list[list[float]]  # matrix[m][n] = KL(p_m || p_n), averaged over tokens, responses, problems
    agents: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {**strict_json(self.estimate), "matrix": self.matrix, "agents": self.agents}


@dataclass(frozen=True)
class KLFromBase:
    """Each agent's KL from the base model on its own responses (keys `gen_<n>` and `critic_<n>`)."""

    estimate: Estimate  # per problem: mean over the agents; standard error over problems
    per_agent: dict[str, Estimate]  # role key -> mean over problems, standard error over problems
    agents: dict[str, str]  # role key -> the agent (model) that wrote those responses

    def as_dict(self) -> dict[str, Any]:
        return {
            **strict_json(self.estimate),
            "per_agent": {k: strict_json(v) for k, v in self.per_agent.items()},
            "agents": self.agents,
        }


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


def _kl(lp_a: torch.Tensor, lp_b: torch.Tensor) -> float:
    """Mean over positions of KL(p_a || p_b) over the full vocabulary, from log-probs [T, V]."""
    import torch

    p_a = lp_a.exp()
    terms = torch.where(p_a > 0, p_a * (lp_a - lp_b), torch.zeros_like(p_a))  # 0 log 0 = 0
    return float(terms.sum(-1).mean())


def _nll(token_ids: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean per-token negative log-likelihood of `token_ids` [T] under `logprobs` [T, V]."""
    ids = token_ids.to(logprobs.device).long().view(-1, 1)
    return float(-logprobs.gather(-1, ids).mean())


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for lo in range(0, len(items), max(1, size)):
        yield items[lo : lo + max(1, size)]


def _scored(
    scorer: Scorer, name: str, prompts: list[list[Message]], responses: list[str]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = scorer.score_responses(name, prompts, responses)
    if len(out) != len(responses):
        raise MftError(f"scorer returned {len(out)} results for {len(responses)} responses")
    return out


def _same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise MftError(
            f"agents {name_a!r} and {name_b!r} scored a response with different shapes "
            f"{tuple(a.shape)} / {tuple(b.shape)}",
            hint="KL needs agents that share one tokenizer (one base model)",
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


# -- held-out NLL and pairwise KL of the final round ------------------------------------------------------
@dataclass
class _FinalScores:
    nll: list[list[list[float]]]  # [problem][scorer slot m][writer slot s]
    kl: list[list[list[float]]] | None  # [problem][m][n]: mean over the problem's final-round responses


def _score_final(
    records: Sequence[DebateRecord],
    want_kl: bool,
    scorer: Scorer,
    chunk_size: int,
    progress: bool,
    same_as_base: Collection[str] = (),
) -> tuple[_FinalScores, list[str]]:
    """Every final-round response under every distinct final-round critic, `chunk_size` responses at a time.

    A model that plays several slots (single-model methods, or base copies: the agents in `same_as_base`)
    is run once per chunk, not once per slot. Only
    one chunk's [T, V] log-probs are alive at a time (for every distinct critic when KL is wanted, else
    only the current one's), so memory stays bounded whatever the vocabulary and the number of problems.
    """
    from tqdm.auto import tqdm

    names = final_round_agents(records)
    n = len(names)
    if n < 2:
        raise MftError(f"likelihood diversity needs at least 2 agents, got {n}")
    bases = [a for a in names if a in same_as_base]
    model = {a: bases[0] if a in same_as_base else a for a in names}  # who computes each slot's scores
    distinct = list(dict.fromkeys(model[a] for a in names))
    items = [(p, s) for p in range(len(records)) for s in range(n)]
    nll = [[[math.nan] * n for _ in range(n)] for _ in records]
    kl_sum = [[[0.0] * n for _ in range(n)] for _ in records] if want_kl else None
    chunks = list(_chunks(items, chunk_size))
    bar = tqdm(total=len(chunks) * len(distinct), desc="diversity: held-out NLL", disable=not progress)
    try:
        for chunk in chunks:
            prompts = [response_prompt(records[p], s, records[p].n_rounds - 1) for p, s in chunk]
            texts = [records[p].responses[-1][s] for p, s in chunk]
            held: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for name in distinct:
                out = _scored(scorer, name, prompts, texts)
                for (p, s), (ids, lp) in zip(chunk, out, strict=True):
                    value = _nll(ids, lp)
                    for m in range(n):
                        if model[names[m]] == name:
                            nll[p][m][s] = value
                if want_kl:
                    held[name] = out
                bar.update(1)
            if kl_sum is not None:
                for j, (p, _s) in enumerate(chunk):
                    for a, b in ((a, b) for a in range(n) for b in range(n) if a != b):
                        if model[names[a]] == model[names[b]]:
                            continue  # one model in two slots: KL 0
                        lp_a, lp_b = held[model[names[a]]][j][1], held[model[names[b]]][j][1]
                        _same_shape(lp_a, lp_b, names[a], names[b])
                        kl_sum[p][a][b] += _kl(lp_a, lp_b)
            del held
    finally:
        bar.close()
    kl = [[[v / n for v in row] for row in prob] for prob in kl_sum] if kl_sum is not None else None
    return _FinalScores(nll, kl), names


def _held_out_from(scores: _FinalScores, names: list[str], round_: int) -> HeldOutNLL:
    n = len(names)
    pairs = [(m, s) for m in range(n) for s in range(n) if m != s]  # never a critic on its own response
    est = mean_se([sum(prob[m][s] for m, s in pairs) / len(pairs) for prob in scores.nll])
    probs = scores.nll
    matrix = [
        [sum(prob[m][s] for prob in probs) / len(probs) if probs else math.nan for s in range(n)]
        for m in range(n)
    ]
    return HeldOutNLL(est, matrix, list(names), round_)


def _kl_from(scores: _FinalScores, names: list[str]) -> PairwiseKL:
    assert scores.kl is not None
    n, probs = len(names), scores.kl
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    est = mean_se([sum(k[a][b] for a, b in pairs) / len(pairs) for k in probs])
    matrix = [
        [sum(k[a][b] for k in probs) / len(probs) if probs else math.nan for b in range(n)] for a in range(n)
    ]
    return PairwiseKL(est, matrix, list(names))


def held_out_nll(
    records: Sequence[DebateRecord], scorer: Scorer, *, chunk_size: int = 8, progress: bool = False
) -> HeldOutNLL:
    """The paper's likelihood diversity: the mean per-token NLL of each final-round (critic) response under
    the critics of the other slots, never under the critic that wrote it; per problem the mean over the
    ordered (scorer, writer) pairs of distinct slots, then mean ± standard error over problems.

    The agents are read from the records (`agents[-1]`); `scorer` must know them. In a single-model method
    every slot holds the same model, so its held-out critic has the writer's weights.
    """
    scores, names = _score_final(records, False, scorer, chunk_size, progress)
    return _held_out_from(scores, names, records[0].n_rounds if records else 0)


def pairwise_kl(
    records: Sequence[DebateRecord], scorer: Scorer, *, chunk_size: int = 8, progress: bool = False
) -> PairwiseKL:
    """For each ordered pair (m, n) of final-round slots, KL(p_m || p_n) between the two critics' full
    next-token distributions, averaged over the tokens of a response, then over all final-round responses
    of a problem; the mean over pairs has its standard error over problems. `matrix[m][n]` (diagonal 0)."""
    scores, names = _score_final(records, True, scorer, chunk_size, progress)
    return _kl_from(scores, names)


def held_out_nll_and_kl(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    *,
    same_as_base: Collection[str] = (),
    chunk_size: int = 8,
    progress: bool = False,
) -> tuple[HeldOutNLL, PairwiseKL]:
    """`held_out_nll` and `pairwise_kl` from one shared scoring pass; the agents in `same_as_base` are
    known to be one model (the base), scored once for all of them."""
    scores, names = _score_final(records, True, scorer, chunk_size, progress, same_as_base)
    return _held_out_from(scores, names, records[0].n_rounds), _kl_from(scores, names)


# -- KL of each agent from the base model ------------------------------------------------------------------
def kl_from_base(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    base: str | Mapping[str, str],
    *,
    same_as_base: Collection[str] = (),
    chunk_size: int = 8,
    progress: bool = False,
) -> KLFromBase:
    """Each agent's per-token KL(p_agent || p_base) on its own responses of every round (see the module
    docstring for the estimator); keys `gen_<n>` (round 1 of slot n) and `critic_<n>` (later rounds).

    `base` is an agent name the scorer knows that is the base model itself, or (a mixed society) a mapping
    from each agent to the one that is its own base; agents named in `same_as_base` are known to be their
    base (no adapter) and get 0 without being scored.
    """
    from tqdm.auto import tqdm

    # items: (problem, round, slot); each response is scored by the agent that wrote it and by the base
    by_agent: dict[str, list[tuple[int, int, int]]] = {}
    keys: dict[str, str] = {}
    for p, r in enumerate(records):
        for rnd, slots in enumerate(r.agents):
            for s, name in enumerate(slots):
                key = role_key(rnd, s)
                if keys.setdefault(key, name) != name:
                    raise MftError(
                        f"problem {r.problem.id}: {key} is agent {name!r} here but {keys[key]!r} before",
                        hint="score the debate records of one society (one iteration's eval/debate.jsonl)",
                    )
                by_agent.setdefault(name, []).append((p, rnd, s))
    values: dict[str, list[list[float]]] = {k: [[] for _ in records] for k in keys}  # key -> [problem]

    def ref(agent: str) -> str:
        if isinstance(base, str):
            return base
        if agent not in base:
            raise MftError(f"agent {agent!r} has no base model to measure its KL from")
        return base[agent]

    refs = {base} if isinstance(base, str) else set(base.values())
    scored = {a: items for a, items in by_agent.items() if a not in refs and a not in same_as_base}
    for a, items in by_agent.items():
        if a not in scored:
            for p, rnd, s in items:
                values[role_key(rnd, s)][p].append(0.0)
    total = sum(len(list(_chunks(items, chunk_size))) for items in scored.values())
    bar = tqdm(total=total, desc="diversity: KL from base", disable=not progress)
    try:
        for agent, items in scored.items():
            for chunk in _chunks(items, chunk_size):
                prompts = [response_prompt(records[p], s, rnd) for p, rnd, s in chunk]
                texts = [records[p].responses[rnd][s] for p, rnd, s in chunk]
                own = _scored(scorer, agent, prompts, texts)
                reference = _scored(scorer, ref(agent), prompts, texts)
                for (p, rnd, s), (_, lp_a), (_, lp_b) in zip(chunk, own, reference, strict=True):
                    _same_shape(lp_a, lp_b, agent, ref(agent))
                    values[role_key(rnd, s)][p].append(_kl(lp_a, lp_b))
                del own, reference
                bar.update(1)
    finally:
        bar.close()
    ordered = sorted(keys, key=lambda k: (k.startswith("critic"), int(k.split("_")[1])))
    per_problem = {k: [sum(v) / len(v) for v in values[k] if v] for k in ordered}
    overall = []
    for p in range(len(records)):
        row = [sum(values[k][p]) / len(values[k][p]) for k in ordered if values[k][p]]
        if row:
            overall.append(sum(row) / len(row))
    return KLFromBase(
        mean_se(overall), {k: mean_se(per_problem[k]) for k in ordered}, {k: keys[k] for k in ordered}
    )
