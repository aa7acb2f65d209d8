"""How diverse a society's agents are, per iteration (the paper's diversity metrics), as diversity.json.

All metrics read the ROUND-1 responses of a debate (`r.responses[0][slot]`): those are what each agent writes
on its own, before seeing the others, so they measure the agents rather than the debate.

- agreement (`pairwise_agreement`): per problem, the fraction of agent pairs whose round-1 answers are
  equivalent (a missing answer agrees with nothing); `consensus_rate`: the fraction of agents whose round-1
  answer is that round's majority answer.
- embedding dissimilarity: per problem, mean over agent pairs of 1 - cosine similarity of the responses'
  sentence embeddings (all-MiniLM-L6-v2 by default, loaded offline by `mft.eval.encoders`).
- likelihood-based, with the agents' own models (`mft.eval.likelihood`): `cross_nll` and `kl`.

Every number is a mean over problems with its standard error over problems (`mean_se`), so iterations and
methods compare like the accuracy table does. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from mft.errors import MftError
from mft.eval.encoders import Encoder
from mft.eval.likelihood import Scorer, cross_nll_and_kl
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


def pairwise_agreement(records: Sequence[DebateRecord], equivalent: Equivalent | Task) -> Estimate:
    """Per problem, the fraction of agent pairs whose round-1 answers are equivalent; mean ± se over problems.

    A missing answer (None) agrees with nothing, not even another None. Problems with fewer than two agents
    have no pairs and are left out (n counts the problems used).
    """
    eq = _equivalence(equivalent)
    values = []
    for r in records:
        answers = r.answers[0] if r.answers else []
        pairs = list(combinations(answers, 2))
        if pairs:
            values.append(sum(_same(eq, a, b) for a, b in pairs) / len(pairs))
    return mean_se(values)


def consensus_rate(records: Sequence[DebateRecord], equivalent: Equivalent | Task) -> Estimate:
    """Per problem, the fraction of agents whose round-1 answer is that round's majority answer
    (`r.round_consensus[0]`; when nobody answered it is None and the rate is 0); mean ± se over problems."""
    eq = _equivalence(equivalent)
    values = []
    for r in records:
        answers = r.answers[0] if r.answers else []
        if not answers:
            continue
        majority = r.round_consensus[0] if r.round_consensus else None
        values.append(sum(_same(eq, a, majority) for a in answers) / len(answers))
    return mean_se(values)


# -- embeddings -------------------------------------------------------------------------------------------
def embedding_dissimilarity(records: Sequence[DebateRecord], encoder: Encoder) -> Estimate:
    """Per problem, the mean over agent pairs of 1 - cosine similarity of the round-1 responses' embeddings;
    mean ± se over problems. All responses are encoded in one call (the encoder batches them)."""
    import numpy as np

    used = [r for r in records if r.responses and len(r.responses[0]) >= 2]
    texts = [t for r in used for t in r.responses[0]]
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
        n = len(r.responses[0])
        sims = unit[i : i + n] @ unit[i : i + n].T
        i += n
        values.append(float(np.mean([1.0 - sims[a, b] for a, b in combinations(range(n), 2)])))
    return mean_se(values)


# -- everything, as one JSON-ready dict -------------------------------------------------------------------
def compute_diversity(
    records: Sequence[DebateRecord],
    task: Task | Equivalent,
    scorer: Scorer | None = None,
    agents: Sequence[Any] | None = None,
    encoder: Encoder | None = None,
    max_problems: int | None = None,
    *,
    chunk_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """All diversity metrics of one iteration's debate records, as a JSON-serialisable dict.

    `max_problems` keeps the first K records (deterministic). Embedding dissimilarity only with an
    `encoder`; cross-NLL and KL only with a `scorer` and one agent per slot (`agents`), from one shared
    scoring pass over the responses.
    """
    recs = list(records)[:max_problems] if max_problems is not None else list(records)
    out: dict[str, Any] = {
        "problems": len(recs),
        "agreement": strict_json(pairwise_agreement(recs, task)),
        "consensus_rate": strict_json(consensus_rate(recs, task)),
    }
    if encoder is not None:
        out["embedding_dissimilarity"] = strict_json(embedding_dissimilarity(recs, encoder))
    if scorer is not None and agents is not None and recs:
        nll, kl = cross_nll_and_kl(recs, scorer, agents, chunk_size=chunk_size, progress=progress)
        out["agents"] = nll.agents
        out["cross_nll"] = nll.as_dict()
        out["kl"] = kl.as_dict()
    return out
