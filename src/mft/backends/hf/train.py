"""The training loop of the hf backend: AdamW with warmup and a linear or cosine decay, gradient clipping,
assistant-only loss, and what lets a 7-8B model train on one GPU.

Why a hand-written loop and not TRL's SFTTrainer: it trains one adapter in place inside the backend's shared
multi-adapter PeftModel (no second copy of the base, the other agents stay loaded and untouched), with the
same maths as SFTTrainer. At the same settings it runs at about the same tokens/s as SFTTrainer
(`benchmarks/finetune_throughput.py`, 1.08x in fp32 on the bundled model, docs/performance.md); its defaults
add length-grouped batches and bf16 autocast where the device has native bf16 (1.68x on critic-sized data,
`benchmarks/finetune_settings.py`).

Memory, as TRL / torchtune users expect (`FinetuneSettings`):
- gradient accumulation: `batch_size` is the effective batch; it is run `micro_batch_size` rows at a time,
  and the loss is normalised by the label tokens of the whole effective batch, so accumulating gives the
  same update as one big batch (to float rounding; tested);
- activation (gradient) checkpointing: recompute each layer's activations in the backward pass;
- `max_length`: longer examples are truncated (their start kept, as TRL does) and counted;
- the loss never holds fp32 logits over the whole vocabulary for the whole batch: the model computes logits
  only at positions whose next token is labelled (`logits_to_keep` with those positions), and the fp32
  cross-entropy runs over chunks of them, each recomputed in the backward pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mft.backends.base import FinetuneSettings, StepCallback, TrainStep
from mft.backends.hf.model import accepts_logits_to_keep
from mft.errors import MftError

if TYPE_CHECKING:
    import torch

    from mft.backends.chat import ChatFormat
    from mft.data.examples import Example

Encoded = tuple[list[int], list[int]]  # token ids, labels (-100 off the assistant turns)
StepOutcome = tuple[float, dict[str, float]]  # a step's loss, and what else it measured (by name)
LOSS_CHUNK_ROWS = 1024  # label positions per fp32 cross-entropy chunk (1024 x 128k vocab x 4 B = 0.5 GB)


def batch_order(
    lengths: list[int], batch_size: int, rng: random.Random, group_by_length: bool = True, pool: int = 8
) -> list[list[int]]:
    """One epoch's batches (lists of example indices), seeded by `rng`.

    Shuffled; with `group_by_length`, like transformers' `group_by_length`: the shuffled examples are cut
    into pools of `pool` batches, each pool is sorted by length and cut into batches, and the batches are
    shuffled. Each batch then pads to a length close to its own examples' (critic conversations of the
    bundled model vary from about 300 to 700 tokens), while batches stay random in content and order.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    step = batch_size * pool
    for lo in range(0, len(order), step):
        chunk = sorted(order[lo : lo + step], key=lambda i: lengths[i])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors of a batch: input ids, labels (-100 on padding) and the attention mask."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def autocast_dtype(precision: str, device: Any) -> Any:
    """The dtype to autocast finetuning to (None: no autocast) for `precision` on `device`."""
    import torch

    if precision not in ("auto", "bf16", "fp32"):
        raise MftError(f"finetune precision must be auto, bf16 or fp32, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own CPU feature checks
        native = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
        return torch.bfloat16 if native else None
    return None


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per optimizer step: mean loss per label token
    truncated: int = 0  # examples longer than max_length, cut to it
    # what else an objective measured per optimizer step, by name (GRPO: reward, kl, ...)
    curves: dict[str, list[float]] = field(default_factory=dict)
    # what else it counted over the finetune (GRPO: groups skipped for giving no signal, ...)
    totals: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"truncated_examples": self.truncated} if self.truncated else {}
        return {**out, **self.totals, **({"curves": self.curves} if self.curves else {})}


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """The learning rate's multiplier at optimizer step `step` (0-based) of `total`: a linear warmup over
    `warmup` steps, then constant, linear decay to 0, or cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise MftError(f"unknown learning-rate schedule {schedule!r}", hint="use linear, cosine or constant")


def _labelled_logits(model: Any, batch: dict[str, Any], keep_logits: bool) -> tuple[Any, Any, Any]:
    """The model's next-token logits at the batch's labelled positions, their target tokens and the row
    (sequence) each belongs to: (logits [L, vocab], targets [L], rows [L]) for the L labelled positions."""
    import torch

    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if keep_logits:
        # only positions whose next token is labelled in some row; their logits, not the whole sequence's
        keep = (targets != -100).any(0).nonzero().squeeze(-1)
        logits = model(**inputs, logits_to_keep=keep).logits
        targets = targets[:, keep]
    else:
        logits = model(**inputs).logits[:, :-1]
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)
    logits = logits.reshape(-1, logits.shape[-1])
    targets, rows = targets.reshape(-1), rows.reshape(-1)
    labelled = targets != -100
    return logits[labelled], targets[labelled], rows[labelled]


def token_loss_sum(model: Any, batch: dict[str, Any], keep_logits: bool) -> Any:
    """Sum over the batch's label tokens of the cross-entropy of the model's next-token prediction."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    logits, targets, _ = _labelled_logits(model, batch, keep_logits)

    def chunk_sum(lg: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(lg.float(), y, reduction="sum")

    total = logits.new_zeros((), dtype=torch.float32)
    for lo in range(0, targets.shape[0], LOSS_CHUNK_ROWS):
        part = slice(lo, lo + LOSS_CHUNK_ROWS)
        # recomputed in the backward pass: one chunk's fp32 logits and softmax exist at a time
        total = total + checkpoint(chunk_sum, logits[part], targets[part], use_reentrant=False)
    return total


def labelled_logps(model: Any, batch: dict[str, Any], keep_logits: bool) -> tuple[Any, Any]:
    """The model's log-probability of each label token of the batch, in row-major order, and the row each
    belongs to: TRL's `selective_log_softmax` in fp32, over the same chunks as `token_loss_sum`."""
    import torch
    from torch.utils.checkpoint import checkpoint
    from trl.trainer.utils import selective_log_softmax

    logits, targets, rows = _labelled_logits(model, batch, keep_logits)

    def chunk_logps(lg: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # one leading row: its logsumexp runs over the whole chunk at once, not one position at a time
        out: torch.Tensor = selective_log_softmax(lg.float().unsqueeze(0), y.unsqueeze(0)).squeeze(0)
        return out

    per_token = [
        checkpoint(
            chunk_logps,
            logits[lo : lo + LOSS_CHUNK_ROWS],
            targets[lo : lo + LOSS_CHUNK_ROWS],
            use_reentrant=False,
        )
        for lo in range(0, targets.shape[0], LOSS_CHUNK_ROWS)
    ]
    values = torch.cat(per_token) if per_token else torch.zeros(0, device=targets.device)
    return values, rows


def sequence_logps(model: Any, batch: dict[str, Any], keep_logits: bool) -> Any:
    """Per row of the batch, the sum over its label tokens of the model's log-probability of the token
    (what DPO compares)."""
    import torch

    values, rows = labelled_logps(model, batch, keep_logits)
    sums = torch.zeros(batch["labels"].shape[0], dtype=torch.float32, device=rows.device)
    return sums.index_add(0, rows, values)


def accumulate(
    model: Any, batch: list[Encoded], pad_id: int, micro: int, keep_logits: bool, dtype: Any
) -> float:
    """Forward and backward of one effective batch, `micro` rows at a time: the gradients add up to those of
    the mean loss per label token over the whole batch (what one pass over it would give). Returns that
    mean loss."""
    import torch

    n_labels = max(1, sum(sum(t != -100 for t in labels[1:]) for _, labels in batch))
    total = 0.0
    for lo in range(0, len(batch), micro):
        part = collate(batch[lo : lo + micro], pad_id)
        part = {k: v.to(model.device) for k, v in part.items()}
        with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss_sum = token_loss_sum(model, part, keep_logits)
        (loss_sum / n_labels).backward()
        total += loss_sum.item()
    return total / n_labels


def _set_checkpointing(model: Any, on: bool) -> None:
    core = getattr(model, "get_base_model", lambda: model)()
    # transformers 5 renamed gradient checkpointing to activation checkpointing; either works
    new_api = hasattr(core, "activation_checkpointing_enable")
    if on:
        # non-reentrant: works with frozen inputs (LoRA) without making the embeddings require grad
        kwargs = {"use_reentrant": False}
        if new_api:
            core.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            core.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif getattr(core, "is_activation_checkpointing" if new_api else "is_gradient_checkpointing", False):
        core.activation_checkpointing_disable() if new_api else core.gradient_checkpointing_disable()


def optimize(
    model: Any,
    params: list[Any],
    lengths: list[int],
    settings: FinetuneSettings,
    rng: random.Random,
    step: Callable[[list[int], int], StepOutcome],
    on_step: StepCallback | None = None,
    updates: int = 1,
) -> list[float]:
    """The optimisation every objective shares: AdamW over `params` with the learning-rate schedule, for
    `settings.epochs` epochs of batches of item indices (`batch_order` over the items' `lengths`, their
    tokens), `updates` optimizer steps per batch (GRPO's updates per sampled batch; 1 otherwise);
    `step(batch, update)` runs the forward and backward passes of one batch and returns its loss and what
    else it measured. `on_step` is told each optimizer step's loss, learning rate, the tokens trained on so
    far and those measures. Returns the loss per optimizer step; the model is left in eval mode, nothing
    trainable."""
    import torch

    batches = (len(lengths) + settings.batch_size - 1) // settings.batch_size
    total_steps = settings.epochs * batches * updates
    warmup = int(settings.warmup_ratio * total_steps)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(settings.lr_schedule, s, total_steps, warmup)
    )
    _set_checkpointing(model, settings.gradient_checkpointing)
    model.train()
    losses: list[float] = []
    tokens = 0
    try:
        for _ in range(settings.epochs):
            for idx in batch_order(lengths, settings.batch_size, rng, settings.group_by_length):
                for update in range(updates):
                    step_loss, extra = step(idx, update)
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    lr = opt.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(step_loss)
                    tokens += sum(lengths[i] for i in idx)
                    if on_step is not None:
                        on_step(TrainStep(len(losses), step_loss, lr, tokens, extra))
    finally:
        _set_checkpointing(model, False)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return losses


def train_loop(
    model: Any,
    params: list[Any],
    encoded: list[Encoded],
    pad_id: int,
    settings: FinetuneSettings,
    rng: random.Random,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train `params` of `model` on `encoded` examples; the model is left in eval mode, nothing trainable.
    `on_step` is told each optimizer step's loss, learning rate and the tokens trained on so far."""
    result = TrainResult()
    if settings.max_length is not None:
        cut = [(ids[: settings.max_length], labels[: settings.max_length]) for ids, labels in encoded]
        result.truncated = sum(len(ids) > settings.max_length for ids, _ in encoded)
        encoded = cut
    micro = min(settings.micro_batch_size or settings.batch_size, settings.batch_size)
    keep_logits = accepts_logits_to_keep(model)
    dtype = autocast_dtype(settings.precision, model.device)

    def step(idx: list[int], update: int) -> StepOutcome:
        return accumulate(model, [encoded[i] for i in idx], pad_id, micro, keep_logits, dtype), {}

    lengths = [len(ids) for ids, _ in encoded]
    result.losses = optimize(model, params, lengths, settings, rng, step, on_step)
    return result


# The SFT objective's loss module (`mft/objectives.py`): encode, loop, train_stats.
def encode(chat: ChatFormat, example: Example) -> Encoded:
    """A chat example as token ids, labelled on its assistant turns."""
    return chat.training_ids(example)


loop = train_loop


def train_stats(settings: FinetuneSettings) -> dict[str, Any]:
    """SFT adds nothing to an agent's train_stats.json."""
    return {}
