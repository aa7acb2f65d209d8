"""How diverse a society's agents are per iteration (the paper's section 4.2, Appendix C): diversity.json.

The answer and text metrics read the FINAL round of each test debate (`answers[-1]`, `responses[-1]`): the
answers the debate is scored on, as the paper's own evaluation reads them for consensus.

- `consensus` (the paper's consensus, as its evaluation code computes it): over all agents that gave a
  final answer, the share whose answer is the final round's majority answer (`round_consensus[-1]`). Agents
  without an answer are left out (not counted as disagreeing); a problem nobody answered is left out. The
  pooled share has a standard error clustered by problem (a ratio estimator), since answers of one problem
  are not independent.
- `agreement`: per problem, the fraction of agent pairs whose final answers are equivalent (a missing answer
  agrees with nothing); mean over problems.
- embedding dissimilarity: per problem, mean over agent pairs of 1 - cosine similarity of the final
  responses' sentence embeddings (all-MiniLM-L6-v2 by default, loaded offline by `mft.eval.encoders`).
- likelihood-based, with the agents' own models (`mft.eval.likelihood`): `held_out_nll` (the paper's
  likelihood diversity), `kl` between critics, and `kl_from_base` per agent (the paper's Figure 8), from
  one scoring of each (model, response) pair they need.

Every number is a mean with its standard error over problems (`Estimate`), so iterations and methods compare
like the accuracy table does. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from mft.errors import MftError
from mft.eval.encoders import Encoder
from mft.eval.likelihood import LOGPROB_BUDGET, Scorer, likelihood_diversity
from mft.eval.metrics import Estimate, mean_se, strict_json
from mft.records import DebateRecord

if TYPE_CHECKING:
    from mft.tasks.base import Task

Equivalent = Callable[[str | None, str | None], bool]


# -- answers ----------------------------------------------------------------------------------------------
def _equivalence(equivalent: Equivalent | Task) -> Equivalent:
    fn = getattr(equivalent, "is_equivalent", equivalent)
    if not callable(fn):
        raise TypeError("equivalent must be a task or a function (a, b) -> bool")
    return fn


def _same(equivalent: Equivalent, a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and bool(equivalent(a, b))


DIVERSITY_VERSION = 2  # 2: final-round answers and texts, held-out NLL, KL from base (1: round 1)


def _final_answers(r: DebateRecord) -> list[str | None]:
    return list(r.answers[-1]) if r.answers else []


def pairwise_agreement(records: Sequence[DebateRecord], equivalent: Equivalent | Task) -> Estimate:
    """Per problem, the fraction of agent pairs whose final answers are equivalent; mean ± se over problems.

    A missing answer (None) agrees with nothing, not even another None. Problems with fewer than two agents
    have no pairs and are left out (n counts the problems used).
    """
    eq = _equivalence(equivalent)
    values = []
    for r in records:
        pairs = list(combinations(_final_answers(r), 2))
        if pairs:
            values.append(sum(_same(eq, a, b) for a, b in pairs) / len(pairs))
    return mean_se(values)


def consensus(records: Sequence[DebateRecord], equivalent: Equivalent | Task) -> Estimate:
    """The share of the final answers given that equal the final round's majority answer, pooled over all
    problems (agents with no answer and problems with none are left out); n counts the problems used.

    The standard error is the ratio estimator's, clustered by problem: with a_i agreeing of m_i answers on
    problem i and c = sum(a) / sum(m), se = sqrt(P / (P - 1) * sum((a_i - c m_i)^2)) / sum(m) over P problems.
    """
    eq = _equivalence(equivalent)
    counts: list[tuple[int, int]] = []
    for r in records:
        answered = [a for a in _final_answers(r) if a is not None]
        if not answered:
            continue
        majority = r.round_consensus[-1] if r.round_consensus else r.consensus
        counts.append((sum(_same(eq, a, majority) for a in answered), len(answered)))
    if not counts:
        return Estimate(math.nan, math.nan, 0)
    total = sum(m for _, m in counts)
    share = sum(a for a, _ in counts) / total
    p = len(counts)
    if p < 2:
        return Estimate(share, 0.0, p)
    var = p / (p - 1) * sum((a - share * m) ** 2 for a, m in counts)
    return Estimate(share, math.sqrt(var) / total, p)


# -- embeddings -------------------------------------------------------------------------------------------
def embedding_dissimilarity(records: Sequence[DebateRecord], encoder: Encoder) -> Estimate:
    """Per problem, the mean over agent pairs of 1 - cosine similarity of the final responses' embeddings;
    mean ± se over problems. All responses are encoded in one call (the encoder batches them)."""
    import numpy as np

    used = [r for r in records if r.responses and len(r.responses[-1]) >= 2]
    texts = [t for r in used for t in r.responses[-1]]
    if not texts:
        return mean_se([])
    emb = np.asarray(encoder.encode(texts), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise MftError(
            f"the encoder returned an array of shape {emb.shape} for {len(texts)} texts",
            hint="encode(texts) must return one embedding row per text",
        )
    # A zero vector has no direction: it is treated as similar to nothing (dissimilarity 1).
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.maximum(norms, 1e-12)
    values, i = [], 0
    for r in used:
        n = len(r.responses[-1])
        sims = unit[i : i + n] @ unit[i : i + n].T
        i += n
        values.append(float(np.mean([1.0 - sims[a, b] for a, b in combinations(range(n), 2)])))
    return mean_se(values)


# -- everything, as one JSON-ready dict -------------------------------------------------------------------
def compute_diversity(
    records: Sequence[DebateRecord],
    task: Task | Equivalent,
    scorer: Scorer | None = None,
    encoder: Encoder | None = None,
    max_problems: int | None = None,
    *,
    base: str | Mapping[str, str] | None = None,
    same_as_base: Collection[str] = (),
    chunk_size: int | None = None,
    logprob_budget: int = LOGPROB_BUDGET,
    reference: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """All diversity metrics of one iteration's test debates, as a JSON-serialisable dict.

    `max_problems` keeps the first K records (None: all). Embedding dissimilarity only with an `encoder`;
    the held-out NLL and the critics' pairwise KL only with a `scorer` (with at least 2 agents); KL from
    the base model with a `scorer` and `base`, the scorer's name for the base model itself (agents in
    `same_as_base` are the base and get 0 unscored). The likelihood metrics come from one scoring of each
    (model, response) pair they need, batched (`mft.eval.likelihood.likelihood_diversity`; `chunk_size`
    and `logprob_budget` bound its blocks); `reference` computes them the simple, slow way instead
    (`mft.eval.likelihood_reference`, `chunk_size` responses per call, 8 by default): the same numbers.

    A mixed society (agents on several base models) passes as `base` each agent's own base: its KL is from
    that base. Its agents need not share a tokenizer, so the critics' pairwise KL is left out, and its base
    copies are scored as their own base for the held-out NLL (per token of the scoring critic's own
    tokenizer).
    """
    recs = list(records)[:max_problems] if max_problems is not None else list(records)
    out: dict[str, Any] = {
        "version": DIVERSITY_VERSION,
        "problems": len(recs),
        "of": len(records),
        "round": recs[0].n_rounds if recs else None,
        "consensus": strict_json(consensus(recs, task)),
        "agreement": strict_json(pairwise_agreement(recs, task)),
    }
    if encoder is not None:
        out["embedding_dissimilarity"] = strict_json(embedding_dissimilarity(recs, encoder))
    if scorer is not None and recs:
        pairs = recs[0].n_agents >= 2
        options: dict[str, Any] = {
            "held_out": pairs,
            "kl": pairs and not isinstance(base, Mapping),  # a mixed society: no KL across tokenizers
            "base": base,
            "same_as_base": same_as_base,
            "progress": progress,
        }
        if reference:
            from mft.eval.likelihood_reference import reference_likelihoods

            got = reference_likelihoods(recs, scorer, chunk_size=chunk_size or 8, **options)
        else:
            got = likelihood_diversity(
                recs, scorer, chunk_size=chunk_size, logprob_budget=logprob_budget, **options
            )
        if got.held_out is not None:
            out["held_out_nll"] = got.held_out.as_dict()
        if got.kl is not None:
            out["kl"] = got.kl.as_dict()
        if got.from_base is not None:
            out["kl_from_base"] = got.from_base.as_dict()
    return out
