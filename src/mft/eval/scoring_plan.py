"""Each (model, response) pair scored once, in batches, and reduced at once to what the metrics need.

The likelihood metrics (`mft.eval.likelihood`) first plan what they need: for each response a `Request`
naming every model that must score it and the ordered pairs (a, b) whose KL(p_a || p_b) they want. A
response that several metrics need under one model (a critic's final-round reply: the held-out NLL, the
critics' pairwise KL and its KL from the base) is then scored under that model once.

`score_requests` works through the requests in blocks of similar length. Within a block each model is asked
once, for all the block's responses it scores (`Scorer.score_responses` batches them itself: the hf backend
by length and by tokens per forward), so a model's requests go out together, not a few at a time. Each
scored response is reduced as soon as it arrives: its mean token NLL under that model, and every KL pair of
it whose two distributions are both on hand; a response's [T, V] log-probs are dropped once its last pair
is computed. A block holds at most about `budget` bytes of them (its responses' tokens x the models that
score them x the vocabulary x 4), at least one response: memory stays bounded whatever the vocabulary
(128k tokens included) and however many problems are scored. Until the first block shows the vocabulary and
the tokens per byte of text, they are assumed large (a vocabulary of 2^18, one token per byte).

Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mft.errors import MftError
from mft.records import Message

if TYPE_CHECKING:
    import torch

# bytes of float32 log-probs a block may hold at once (1 GiB: about 520 tokens of a 128k vocabulary under 4
# models, a handful of replies; 150,000 of the bundled model's 433, a small run's every reply)
LOGPROB_BUDGET = 1 << 30
_VOCAB_GUESS = 1 << 18  # before the first block is scored: at least any common vocabulary
_TOKEN_MARGIN = 4  # tokens a reply may have beyond its text's estimate (its end-of-turn token, ...)


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
class Request:
    """One response to score: under each of `models` (its NLL under each), and the KL pairs it needs."""

    prompt: list[Message]  # the conversation the response answered
    response: str
    models: tuple[str, ...]  # every model that scores it, each once
    pairs: tuple[tuple[str, str], ...] = ()  # (a, b): KL(p_a || p_b), a != b, both in `models`


@dataclass
class Scored:
    """What a request's scoring left: mean token NLL per model, mean per-token KL per pair."""

    nll: dict[str, float] = field(default_factory=dict)
    kl: dict[tuple[str, str], float] = field(default_factory=dict)


def token_kl(lp_a: torch.Tensor, lp_b: torch.Tensor) -> float:
    """Mean over positions of KL(p_a || p_b) over the full vocabulary, from log-probs [T, V]."""
    import torch

    p_a = lp_a.exp()
    terms = torch.where(p_a > 0, p_a * (lp_a - lp_b), torch.zeros_like(p_a))  # 0 log 0 = 0
    return float(terms.sum(-1).mean())


def token_nll(token_ids: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean per-token negative log-likelihood of `token_ids` [T] under `logprobs` [T, V]."""
    ids = token_ids.to(logprobs.device).long().view(-1, 1)
    return float(-logprobs.gather(-1, ids).mean())


def same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Two models' log-probs of one response must align position by position (one tokenizer)."""
    if a.shape != b.shape:
        raise MftError(
            f"agents {name_a!r} and {name_b!r} scored a response with different shapes "
            f"{tuple(a.shape)} / {tuple(b.shape)}",
            hint="KL needs agents that share one tokenizer (one base model)",
        )


def scored_by(scorer: Scorer, name: str, prompts: list[list[Message]], responses: list[str]) -> list[Any]:
    """`scorer.score_responses`, checked to answer every response."""
    out = scorer.score_responses(name, prompts, responses)
    if len(out) != len(responses):
        raise MftError(f"scorer returned {len(out)} results for {len(responses)} responses")
    return out


def _text_bytes(request: Request) -> int:
    return len(request.response.encode())


@dataclass
class _Sizes:
    """What blocks are sized by, learned from what has been scored: vocabulary, tokens per byte of text."""

    vocab: int = _VOCAB_GUESS
    tokens_per_byte: float = 1.0
    seen: bool = False

    def learn(self, request: Request, ids: Any, logprobs: Any) -> None:
        ratio, vocab = len(ids) / max(1, _text_bytes(request)), int(logprobs.shape[-1])
        if self.seen:  # the most seen so far: a block of later requests stays near the budget
            ratio, vocab = max(self.tokens_per_byte, ratio), max(self.vocab, vocab)
        self.tokens_per_byte, self.vocab, self.seen = ratio, vocab, True

    def cost(self, request: Request) -> int:
        """Bytes of log-probs a request may hold at once: its tokens under every model that scores it."""
        tokens = math.ceil(_text_bytes(request) * self.tokens_per_byte) + _TOKEN_MARGIN
        return tokens * len(request.models) * self.vocab * 4


def _next_block(
    order: list[int], start: int, requests: Sequence[Request], sizes: _Sizes, budget: int, most: int | None
) -> list[int]:
    """Requests order[start:...] while they fit in `budget` (at least one) and number at most `most`."""
    block, used = [order[start]], sizes.cost(requests[order[start]])
    for i in order[start + 1 :]:
        if most is not None and len(block) >= most:
            break
        used += sizes.cost(requests[i])
        if used > budget:
            break
        block.append(i)
    return block


def score_requests(
    requests: Sequence[Request],
    scorer: Scorer,
    *,
    budget: int = LOGPROB_BUDGET,
    most: int | None = None,
    progress: bool = False,
    desc: str = "diversity: likelihoods",
) -> list[Scored]:
    """Every request scored under each of its models once, reduced to NLLs and KL pairs (module docstring).

    `budget`: bytes of log-probs a block may hold at once (about); `most`: at most this many responses per
    block (None: as many as fit). Results are in request order, whatever the blocks.
    """
    from tqdm.auto import tqdm

    out = [Scored() for _ in requests]
    # similar lengths together: the prompt's and the response's text (a proxy for tokens before tokenizing)
    size = [sum(len(m.content) for m in r.prompt) + len(r.response) for r in requests]
    order = sorted(range(len(requests)), key=lambda i: (size[i], i))
    sizes = _Sizes()
    bar = tqdm(total=sum(len(r.models) for r in requests), desc=desc, disable=not progress)
    try:
        start = 0
        while start < len(order):
            block = _next_block(order, start, requests, sizes, budget, most)
            start += len(block)
            _score_block(block, requests, scorer, out, sizes, bar)
    finally:
        bar.close()
    return out


def _score_block(
    block: list[int],
    requests: Sequence[Request],
    scorer: Scorer,
    out: list[Scored],
    sizes: _Sizes,
    bar: Any,
) -> None:
    """One block: each model once over the block's requests it scores; NLLs and KL pairs as they come."""
    models = list(dict.fromkeys(m for i in block for m in requests[i].models))
    pending = {i: set(requests[i].pairs) for i in block}  # KL pairs not computed yet
    held: dict[int, dict[str, Any]] = {i: {} for i in block}  # log-probs kept for pairs still pending
    for model in models:
        mine = [i for i in block if model in requests[i].models]
        scores = scored_by(
            scorer, model, [requests[i].prompt for i in mine], [requests[i].response for i in mine]
        )
        for i, (ids, logprobs) in zip(mine, scores, strict=True):
            sizes.learn(requests[i], ids, logprobs)
            out[i].nll[model] = token_nll(ids, logprobs)
            if not any(model in pair for pair in pending[i]):
                continue
            held[i][model] = logprobs
            for a, b in sorted(p for p in pending[i] if p[0] in held[i] and p[1] in held[i]):
                same_shape(held[i][a], held[i][b], a, b)
                out[i].kl[(a, b)] = token_kl(held[i][a], held[i][b])
                pending[i].discard((a, b))
            for name in [n for n in held[i] if not any(n in pair for pair in pending[i])]:
                del held[i][name]  # no pair of this response needs it any more
        del scores
        bar.update(len(mine))
