"""DPO for the hf backend: TRL's DPO loss inside the project's own multi-adapter training loop.

Why not TRL's DPOTrainer: like SFT (`train.py`), an agent is trained in place as one adapter of the
backend's shared PeftModel, next to every other agent's adapter, and DPOTrainer wants a model of its own.
What is TRL's here: the loss (DPOTrainer's default `loss_type="sigmoid"` with `f_divergence_type=
"reverse_kl"`, written out in `dpo_loss`), the per-token log-probabilities (`selective_log_softmax`, in
`train.sequence_logps`), precomputed reference log-probabilities (its `precompute_ref_log_probs`) and
dropout off while training (its `disable_dropout`). A test checks the loss equals DPOTrainer's on the same
batch.

The reference is the agent's own weights before this finetune: its previous adapter (or, in iteration 1,
the base: a fresh LoRA adapter starts with B = 0 and computes exactly the base model), i.e. the model being
trained at step 0. Its log-probabilities are computed once, before the first step, with the model as it is
then -- no second copy of the model and no second adapter in memory, and nothing to switch while training.

Log-probabilities are sums over the reply's tokens only: each side of a pair is rendered as one chat (the
prompt, then the reply) by the same chat template and assistant mask SFT trains with
(`ChatFormat.training_ids`), with the prompt's own assistant turns (a critic's earlier answers) out of it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mft.backends.base import FinetuneSettings, StepCallback
from mft.backends.chat import ChatFormat
from mft.backends.hf.model import accepts_logits_to_keep
from mft.backends.hf.train import (
    Encoded,
    StepOutcome,
    TrainResult,
    autocast_dtype,
    collate,
    optimize,
    sequence_logps,
)
from mft.data.examples import Pair

if TYPE_CHECKING:
    import torch

EncodedPair = tuple[Encoded, Encoded]  # chosen, rejected: (token ids, labels on the reply only)


def encode_pair(chat: ChatFormat, pair: Pair) -> EncodedPair:
    chosen, rejected = pair.chats()
    return chat.training_ids(chosen), chat.training_ids(rejected)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per pair, TRL's sigmoid DPO loss -log sigmoid(beta ((chosen - ref_chosen) - (rejected -
    ref_rejected))) of the sequence log-probabilities; log 2 where policy and reference agree."""
    import torch.nn.functional as F

    delta = (chosen - ref_chosen) - (rejected - ref_rejected)
    loss: torch.Tensor = -F.logsigmoid(beta * delta)
    return loss


def pair_logps(
    model: Any, pairs: list[EncodedPair], pad_id: int, keep_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed reply log-probabilities of each pair's chosen and rejected side, from one forward pass
    over [chosen..., rejected...] (the batch layout TRL uses)."""
    batch = collate([c for c, _ in pairs] + [r for _, r in pairs], pad_id)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    logps = sequence_logps(model, batch, keep_logits)
    chosen, rejected = logps.chunk(2)
    return chosen, rejected


def reference_logps(
    model: Any, pairs: list[EncodedPair], pad_id: int, micro: int, keep_logits: bool, dtype: Any
) -> torch.Tensor:
    """[n, 2]: the reference's (the model's as it is now) chosen and rejected log-probabilities of every pair,
    `micro` pairs per forward pass, without gradients."""
    import torch

    model.eval()
    parts = []
    with torch.no_grad():
        for lo in range(0, len(pairs), micro):
            with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                chosen, rejected = pair_logps(model, pairs[lo : lo + micro], pad_id, keep_logits)
            parts.append(torch.stack([chosen, rejected], dim=1))
    return torch.cat(parts).detach()


@contextlib.contextmanager
def dropout_off(model: Any) -> Iterator[None]:
    """Every dropout of `model` at p = 0 inside the block (as DPOTrainer's `disable_dropout`: the reference
    was computed without it), restored after, so other agents' SFT keeps its `lora_dropout`."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    before = [m.p for m in layers]
    for m in layers:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(layers, before, strict=True):
            m.p = p


def dpo_accumulate(
    model: Any,
    pairs: list[EncodedPair],
    ref: torch.Tensor,
    pad_id: int,
    micro: int,
    keep_logits: bool,
    dtype: Any,
    beta: float,
) -> float:
    """Forward and backward of one effective batch of pairs, `micro` pairs at a time: the gradients add up
    to those of the mean DPO loss over the batch (TRL's reduction). Returns that mean loss."""
    import torch

    total = 0.0
    for lo in range(0, len(pairs), micro):
        part = pairs[lo : lo + micro]
        with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            chosen, rejected = pair_logps(model, part, pad_id, keep_logits)
        r = ref[lo : lo + len(part)].to(chosen.device)
        loss = dpo_loss(chosen, rejected, r[:, 0], r[:, 1], beta).sum() / len(pairs)
        loss.backward()
        total += loss.item()
    return total


def dpo_loop(
    model: Any,
    params: list[Any],
    pairs: list[EncodedPair],
    pad_id: int,
    settings: FinetuneSettings,
    rng: random.Random,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train `params` of `model` by DPO on `pairs`, against the model's own log-probabilities before the
    first step; `batch_size` and `micro_batch_size` count pairs (each is two sequences in a forward pass).
    `on_step` sees each optimizer step (its loss: the mean DPO loss of the batch's pairs)."""
    result = TrainResult()
    if settings.max_length is not None:
        cut = settings.max_length
        result.truncated = sum(len(c[0]) > cut or len(r[0]) > cut for c, r in pairs)
        pairs = [((c[0][:cut], c[1][:cut]), (r[0][:cut], r[1][:cut])) for c, r in pairs]
    micro = min(settings.micro_batch_size or settings.batch_size, settings.batch_size)
    keep_logits = accepts_logits_to_keep(model)
    dtype = autocast_dtype(settings.precision, model.device)
    with dropout_off(model):
        ref = reference_logps(model, pairs, pad_id, micro, keep_logits, dtype)

        def step(idx: list[int], update: int) -> StepOutcome:
            batch = [pairs[i] for i in idx]
            loss = dpo_accumulate(
                model, batch, ref[idx], pad_id, micro, keep_logits, dtype, settings.dpo_beta
            )
            return loss, {}

        lengths = [len(c[0]) + len(r[0]) for c, r in pairs]
        result.losses = optimize(model, params, lengths, settings, rng, step, on_step)
    return result


# The DPO objective's loss module (`mft/objectives.py`): encode, loop, train_stats.
encode = encode_pair
loop = dpo_loop


def train_stats(settings: FinetuneSettings) -> dict[str, Any]:
    """The objective and its beta (an agent's first loss is about log 2: it starts as its reference)."""
    return {"objective": "dpo", "dpo_beta": settings.dpo_beta}
