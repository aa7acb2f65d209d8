"""The likelihood diversity metrics computed the simple, slow way: the reference the planned computation
(`mft.eval.likelihood.likelihood_diversity`) is checked and timed against.

It is how they were computed before scoring was planned: each metric scores what it needs on its own, in
calls of `chunk_size` responses taken in record order (8 by default; 1: one response per call, so one per
forward and no padding), with no pair shared between metrics. The held-out pass scores every final-round
response under every distinct critic, one chunk at a time, and computes the critics' KL while that chunk's
distributions are all on hand; the KL-from-base pass scores each agent's own responses under the agent and
under its base, chunk by chunk. A critic's final-round response is so scored twice by that critic, and the
base scores it again for every agent. The numbers are the same as the planned computation's, to float
rounding (batches padded otherwise), and go through the same estimates (`mft.eval.likelihood_results`).

Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from mft.eval.likelihood import base_of, critics_of, response_prompt, role_key, writers
from mft.eval.likelihood_results import (
    KLFromBase,
    Likelihoods,
    from_base_from,
    held_out_from,
    pairwise_kl_from,
)
from mft.eval.scoring_plan import Scorer, same_shape, scored_by, token_kl, token_nll
from mft.records import DebateRecord


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for lo in range(0, len(items), max(1, size)):
        yield items[lo : lo + max(1, size)]


def reference_likelihoods(
    records: Sequence[DebateRecord],
    scorer: Scorer,
    *,
    held_out: bool = True,
    kl: bool = True,
    base: str | Mapping[str, str] | None = None,
    same_as_base: Collection[str] = (),
    chunk_size: int = 8,
    progress: bool = False,
) -> Likelihoods:
    """What `likelihood_diversity` computes, with the same arguments, the simple way (module docstring).

    In a mixed society (`base` a mapping) the base copies are not one model: the held-out pass scores each
    under its own name."""
    recs = list(records)
    nll_out = kl_out = None
    if held_out or kl:
        copies = () if isinstance(base, Mapping) else same_as_base
        nll, kls, names = _score_final(recs, kl, scorer, chunk_size, progress, copies)
        nll_out = held_out_from(nll, names, recs[0].n_rounds) if held_out else None
        kl_out = pairwise_kl_from(kls, names) if kls is not None else None
    from_base = None
    if base is not None:
        from_base = _kl_from_base(recs, scorer, base, same_as_base, chunk_size, progress)
    return Likelihoods(nll_out, kl_out, from_base)


def _score_final(
    records: list[DebateRecord],
    want_kl: bool,
    scorer: Scorer,
    chunk_size: int,
    progress: bool,
    same_as_base: Collection[str],
) -> tuple[list[list[list[float]]], list[list[list[float]]] | None, list[str]]:
    """Every final-round response under every distinct final-round critic, `chunk_size` responses at a time:
    nll[problem][scorer slot m][writer slot s] and (`want_kl`) kl[problem][m][n], the mean over the problem's
    final-round responses. The agents in `same_as_base` are one model, scored as the first of them."""
    from tqdm.auto import tqdm

    names = critics_of(records)
    n = len(names)
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
            held: dict[str, list[Any]] = {}
            for name in distinct:
                out = scored_by(scorer, name, prompts, texts)
                for (p, s), (ids, lp) in zip(chunk, out, strict=True):
                    value = token_nll(ids, lp)
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
                        same_shape(lp_a, lp_b, names[a], names[b])
                        kl_sum[p][a][b] += token_kl(lp_a, lp_b)
            del held
    finally:
        bar.close()
    kls = [[[v / n for v in row] for row in prob] for prob in kl_sum] if kl_sum is not None else None
    return nll, kls, names


def _kl_from_base(
    records: list[DebateRecord],
    scorer: Scorer,
    base: str | Mapping[str, str],
    same_as_base: Collection[str],
    chunk_size: int,
    progress: bool,
) -> KLFromBase:
    """Each agent's own responses, `chunk_size` at a time, under the agent and under its base."""
    from tqdm.auto import tqdm

    keys = writers(records)
    by_agent: dict[str, list[tuple[int, int, int]]] = {}
    for p, r in enumerate(records):
        for rnd, slots in enumerate(r.agents):
            for s, name in enumerate(slots):
                by_agent.setdefault(name, []).append((p, rnd, s))
    values: dict[str, list[list[float]]] = {k: [[] for _ in records] for k in keys}  # key -> [problem]
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
            ref = base_of(base, agent)
            for chunk in _chunks(items, chunk_size):
                prompts = [response_prompt(records[p], s, rnd) for p, rnd, s in chunk]
                texts = [records[p].responses[rnd][s] for p, rnd, s in chunk]
                own = scored_by(scorer, agent, prompts, texts)
                reference = scored_by(scorer, ref, prompts, texts)
                for (p, rnd, s), (_, lp_a), (_, lp_b) in zip(chunk, own, reference, strict=True):
                    same_shape(lp_a, lp_b, agent, ref)
                    values[role_key(rnd, s)][p].append(token_kl(lp_a, lp_b))
                del own, reference
                bar.update(1)
    finally:
        bar.close()
    return from_base_from(values, keys, len(records))
