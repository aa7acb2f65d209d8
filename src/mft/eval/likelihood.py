"""Likelihood-based diversity: how the agents' own models score each other's round-1 responses.

- `cross_nll`: how unlikely agent n finds the other agents' responses (mean per-token NLL; higher = less
  predictable by each other = more diverse);
- `pairwise_kl`: KL(p_n || p_m) between two agents' next-token distributions on the same responses.

Both come from one scoring pass through a `Scorer` (the hf backend is one). Every number is a mean over
problems with its standard error over problems. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
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
class CrossNLL:
    """Mean over agents n of the per-token NLL agent n gives the other agents' round-1 responses."""

    estimate: Estimate  # mean over agents, standard error over problems
    per_agent: list[float]  # agent n's value, averaged over problems
    agents: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {**strict_json(self.estimate), "per_agent": self.per_agent, "agents": self.agents}


@dataclass(frozen=True)
class PairwiseKL:
    """Mean over ordered pairs (n, m), n != m, of KL(p_n || p_m) per response token."""

    estimate: Estimate  # mean over pairs, standard error over problems
    matrix: list[list[float]]  # matrix[n][m] = KL(p_n || p_m), averaged over tokens, responses, problems
    agents: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {**strict_json(self.estimate), "matrix": self.matrix, "agents": self.agents}


def _agent_names(agents: Sequence[Any]) -> list[str]:
    return [a if isinstance(a, str) else a.name for a in agents]  # names or backend Agents


def _round1_prompt(r: DebateRecord, slot: int) -> list[Message]:
    """What agent `slot` was asked in round 1: its conversation up to its first reply (the question)."""
    conv = r.conversations[slot] if slot < len(r.conversations) else []
    prompt: list[Message] = []
    for m in conv:
        if m.role == "assistant":
            break
        prompt.append(m)
    if not prompt:
        raise MftError(
            f"problem {r.problem.id}: agent slot {slot} has no round-1 prompt in its conversation",
            hint="diversity needs debate records written by `mft debate` (with conversations)",
        )
    return prompt


def _kl(lp_n: torch.Tensor, lp_m: torch.Tensor) -> float:
    """Mean over positions of KL(p_n || p_m) over the full vocabulary, from log-probs [T, V]."""
    import torch

    p_n = lp_n.exp()
    terms = torch.where(p_n > 0, p_n * (lp_n - lp_m), torch.zeros_like(p_n))  # 0 log 0 = 0
    return float(terms.sum(-1).mean())


def _nll(token_ids: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean per-token negative log-likelihood of `token_ids` [T] under `logprobs` [T, V]."""
    ids = token_ids.to(logprobs.device).long().view(-1, 1)
    return float(-logprobs.gather(-1, ids).mean())


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]


@dataclass
class _Scores:
    nll: list[list[list[float]]]  # [problem][scoring agent n][response slot m]
    kl: list[list[list[float]]] | None  # [problem][n][m]: mean over the problem's responses


def _score(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    names: list[str],
    want_kl: bool,
    chunk_size: int,
    progress: bool,
) -> _Scores:
    """Score every round-1 response of every problem under every agent, in chunks of `chunk_size` responses.

    Only one chunk's [T, V] log-probs are alive at a time (for every agent when KL is wanted, else only the
    current agent's), so memory stays bounded whatever the vocabulary and the number of problems.
    """
    from tqdm.auto import tqdm

    n = len(names)
    if n < 2:
        raise MftError(f"likelihood diversity needs at least 2 agents, got {n}")
    for r in records:
        if not r.responses or len(r.responses[0]) != n:
            got = len(r.responses[0]) if r.responses else 0
            raise MftError(
                f"problem {r.problem.id}: {got} round-1 responses but {n} agents were given to score them",
                hint="pass one agent per debate slot, in slot order",
            )
    items = [(p, s) for p in range(len(records)) for s in range(n)]
    prompts = {(p, s): _round1_prompt(records[p], s) for p, s in items}
    nll = [[[math.nan] * n for _ in range(n)] for _ in records]
    kl_sum = [[[0.0] * n for _ in range(n)] for _ in records] if want_kl else None
    chunks = list(_chunks(items, max(1, chunk_size)))
    bar = tqdm(total=len(chunks) * n, desc="diversity: scoring", unit="batch", disable=not progress)
    try:
        for chunk in chunks:
            chunk_prompts = [prompts[i] for i in chunk]
            chunk_responses = [records[p].responses[0][s] for p, s in chunk]
            held: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
            for a, name in enumerate(names):
                out = scorer.score_responses(name, chunk_prompts, chunk_responses)
                if len(out) != len(chunk):
                    raise MftError(f"scorer returned {len(out)} results for {len(chunk)} responses")
                for (p, s), (ids, lp) in zip(chunk, out, strict=True):
                    nll[p][a][s] = _nll(ids, lp)
                if want_kl:
                    held.append(out)
                bar.update(1)
            if kl_sum is not None:
                for j, (p, _s) in enumerate(chunk):
                    for a, b in ((a, b) for a in range(n) for b in range(n) if a != b):
                        lp_a, lp_b = held[a][j][1], held[b][j][1]
                        if lp_a.shape != lp_b.shape:
                            raise MftError(
                                f"agents {names[a]!r} and {names[b]!r} scored a response with different "
                                f"shapes {tuple(lp_a.shape)} / {tuple(lp_b.shape)}",
                                hint="KL needs agents that share one tokenizer (one base model)",
                            )
                        kl_sum[p][a][b] += _kl(lp_a, lp_b)
            del held
    finally:
        bar.close()
    kl = None
    if kl_sum is not None:
        kl = [[[v / n for v in row] for row in prob] for prob in kl_sum]  # n responses per problem
    return _Scores(nll, kl)


def _cross_nll_from(scores: _Scores, names: list[str]) -> CrossNLL:
    n = len(names)
    # per_prob[p][a]: agent a's mean NLL of the other agents' responses on problem p
    per_prob = [
        [sum(row[a][m] for m in range(n) if m != a) / (n - 1) for a in range(n)] for row in scores.nll
    ]
    est = mean_se([sum(v) / n for v in per_prob])
    per_agent = [sum(v[a] for v in per_prob) / len(per_prob) for a in range(n)] if per_prob else []
    return CrossNLL(est, per_agent, list(names))


def _kl_from(scores: _Scores, names: list[str]) -> PairwiseKL:
    assert scores.kl is not None
    n, probs = len(names), scores.kl
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    est = mean_se([sum(k[a][b] for a, b in pairs) / len(pairs) for k in probs])
    matrix = [
        [sum(k[a][b] for k in probs) / len(probs) if probs else math.nan for b in range(n)] for a in range(n)
    ]
    return PairwiseKL(est, matrix, list(names))


def cross_nll(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    agents: Sequence[Any],
    *,
    chunk_size: int = 8,
    progress: bool = False,
) -> CrossNLL:
    """For each agent n (slot n), the mean per-token NLL under agent n's model of the other agents' (m != n)
    round-1 responses, each scored as the reply to its own round-1 prompt; the mean over n has its standard
    error over problems. Higher = the agents find each other's responses less predictable = more diverse.

    `agents`: one name (or backend Agent) per debate slot, in slot order, known to `scorer`.
    """
    names = _agent_names(agents)
    return _cross_nll_from(_score(records, scorer, names, False, chunk_size, progress), names)


def pairwise_kl(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    agents: Sequence[Any],
    *,
    chunk_size: int = 8,
    progress: bool = False,
) -> PairwiseKL:
    """For each ordered pair (n, m), n != m, KL(p_n || p_m) between the two agents' full next-token
    distributions, averaged over the tokens of a response, then over all agents' round-1 responses of a
    problem; the mean over pairs has its standard error over problems. `matrix[n][m]` (diagonal 0)."""
    names = _agent_names(agents)
    return _kl_from(_score(records, scorer, names, True, chunk_size, progress), names)


def cross_nll_and_kl(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    agents: Sequence[Any],
    *,
    chunk_size: int = 8,
    progress: bool = False,
) -> tuple[CrossNLL, PairwiseKL]:
    """`cross_nll` and `pairwise_kl` from one shared scoring pass (each response is scored once per agent)."""
    names = _agent_names(agents)
    scores = _score(records, scorer, names, True, chunk_size, progress)
    return _cross_nll_from(scores, names), _kl_from(scores, names)
