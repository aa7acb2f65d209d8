"""What the likelihood diversity metrics report (`mft.eval.likelihood`), and how per-problem scores become
those reports: the same for the planned computation and the reference one (`mft.eval.likelihood_reference`).

Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mft.eval.metrics import Estimate, mean_se, strict_json


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


@dataclass(frozen=True)
class Likelihoods:
    """The likelihood metrics `likelihood_diversity` was asked for (None: not asked, or not defined)."""

    held_out: HeldOutNLL | None
    kl: PairwiseKL | None
    from_base: KLFromBase | None


# -- from per-problem scores to estimates ------------------------------------
def held_out_from(nll: list[list[list[float]]], names: list[str], round_: int) -> HeldOutNLL:
    """From nll[problem][scorer slot m][writer slot s]."""
    n = len(names)
    pairs = [(m, s) for m in range(n) for s in range(n) if m != s]  # never a critic on its own response
    est = mean_se([sum(prob[m][s] for m, s in pairs) / len(pairs) for prob in nll])
    matrix = [
        [sum(prob[m][s] for prob in nll) / len(nll) if nll else math.nan for s in range(n)] for m in range(n)
    ]
    return HeldOutNLL(est, matrix, list(names), round_)


def pairwise_kl_from(kl: list[list[list[float]]], names: list[str]) -> PairwiseKL:
    """From kl[problem][m][n], each the mean over the problem's final-round responses."""
    n = len(names)
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    est = mean_se([sum(k[a][b] for a, b in pairs) / len(pairs) for k in kl])
    matrix = [[sum(k[a][b] for k in kl) / len(kl) if kl else math.nan for b in range(n)] for a in range(n)]
    return PairwiseKL(est, matrix, list(names))


def from_base_from(values: dict[str, list[list[float]]], keys: dict[str, str], problems: int) -> KLFromBase:
    """From values[role key][problem]: the KL of each of that role's responses in that problem."""
    ordered = sorted(keys, key=lambda k: (k.startswith("critic"), int(k.split("_")[1])))
    per_problem = {k: [sum(v) / len(v) for v in values[k] if v] for k in ordered}
    overall = []
    for p in range(problems):
        row = [sum(values[k][p]) / len(values[k][p]) for k in ordered if values[k][p]]
        if row:
            overall.append(sum(row) / len(row))
    return KLFromBase(
        mean_se(overall), {k: mean_se(per_problem[k]) for k in ordered}, {k: keys[k] for k in ordered}
    )
