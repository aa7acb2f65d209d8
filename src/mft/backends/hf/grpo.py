"""GRPO for the hf backend: TRL's GRPO loss inside the project's own multi-adapter training loop, on replies
the agent samples in its own role, rewarded for agreeing with the society's consensus (no ground truth).

Why not TRL's GRPOTrainer: as with SFT and DPO (`train.py`, `dpo.py`), an agent trains in place as one
adapter of the backend's shared PeftModel, next to every other agent's adapter, and its replies are sampled
by the backend's own generation (`HFBackend.generate`: its KV cache, the adapter being trained merged into
the weights where that is lossless), not a second generation path. What is TRL's here: the loss
(`grpo_loss`, its `_compute_loss` with token-level importance sampling, for `loss_type` "grpo",
"dr_grpo" and "dapo"; a test checks it equals TRL's on the same tensors), the group advantages (its
`scale_rewards` "group", or "none" for Dr. GRPO), per-token log-probabilities by `selective_log_softmax`
(`train.labelled_logps`) and the k3 estimate of the KL to the reference.

One sampled batch: `batch_size` prompts (an agent's data, `data.builders.generator_prompts` /
`critic_prompts`), G = `grpo_group` replies each, drawn at the run's sampling settings with a seed per
batch. Each reply is scored by `settings.reward` (`data.rewards.ConsensusReward`: 1 when its answer is the
debate's consensus). A group whose G rewards are all equal has advantages of 0 and no policy gradient: it is
left out of the loss (its KL term with it), which saves its forward and backward passes. The batch then takes
`grpo_updates` optimizer steps (TRL's num_iterations): the first on-policy (ratio 1), the later ones clipped
against the log-probabilities the replies had when they were sampled.

The reference (`grpo_beta` > 0) is the base model, the adapter switched off (no second copy of the model),
or with `grpo_reference: previous` the agent's weights before this finetune, loaded as a second adapter
(in iteration 1 that is the base as well: a fresh adapter computes exactly the base).

A reply is trained on as the chat template renders it after its prompt (`ChatFormat.reply_ids`, its stop
token included): as SFT trains on replies and as the next debate round shows them. The policy, old and
reference log-probabilities are all taken on those tokens.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mft.backends.base import FinetuneSettings, Reward, Sampling, StepCallback
from mft.backends.chat import ChatFormat
from mft.backends.hf.dpo import dropout_off
from mft.backends.hf.model import LoadedModel, accepts_logits_to_keep
from mft.backends.hf.train import (
    Encoded,
    StepOutcome,
    TrainResult,
    autocast_dtype,
    collate,
    labelled_logps,
    optimize,
)
from mft.data.examples import Prompt
from mft.errors import MftError
from mft.records import Message

if TYPE_CHECKING:
    import torch

EncodedPrompt = tuple[list[Message], str]  # the prompt (its assistant turns out of any loss), the consensus
# replies to `prompts` (one per prompt, in order) sampled as the model being trained, at `sampling`
Sampler = Callable[[list[list[Message]], Sampling], list[str]]


@dataclass(frozen=True)
class Rollout:
    """What GRPO's loop needs besides the model: how to sample replies as the agent being trained, how to
    score them, the context in which the model computes as the reference, and the chat format."""

    sample: Sampler
    reward: Reward
    reference: Callable[[], contextlib.AbstractContextManager[Any]]
    chat: ChatFormat


def encode(chat: ChatFormat, item: Prompt) -> EncodedPrompt:
    return item.context(), item.consensus


def group_advantages(rewards: torch.Tensor, scale: bool) -> torch.Tensor:
    """[P, G] rewards of P groups of G replies -> their advantages: the reward minus its group's mean,
    divided by the group's standard deviation (unbiased) + 1e-4 where `scale` (TRL's scale_rewards "group";
    without: "none", Dr. GRPO)."""
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + 1e-4)
    return advantages


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    epsilon: float,
    loss_type: str,
    max_tokens: int,
    rows: int | None = None,
    tokens: float | None = None,
) -> torch.Tensor:
    """TRL's GRPO loss of [B, T] per-token log-probabilities of B replies (policy, at sampling time, and
    the reference's where beta > 0), their [B] advantages and [B, T] reply mask: the clipped ratio term plus
    beta times the per-token KL estimate exp(ref - logp) - (ref - logp) - 1 (weighted by the ratio); "grpo"
    averages each reply's tokens then the replies, "dr_grpo" sums the tokens over B * max_tokens, "dapo"
    over the tokens of all B replies. `rows` / `tokens`: the replies / reply tokens of the whole batch where
    these B are one micro-batch of it (the parts then add up to the batch's loss)."""
    import torch

    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference's log-probabilities")
        # TRL's estimate with its default importance-sampling correction (`use_bias_correction_kl`): the
        # replies were sampled from the old policy, so each token's KL is weighted by the ratio
        per_token = per_token + beta * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1) * ratio
    rows = logps.shape[0] if rows is None else rows
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / rows
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (rows * max_tokens)
    if loss_type == "dapo":
        total = mask.sum() if tokens is None else tokens
        return (per_token * mask).sum() / max(1.0, float(total))
    raise MftError(f"unknown GRPO loss {loss_type!r}", hint="use grpo, dr_grpo or dapo")


def reply_encoded(chat: ChatFormat, prompt: list[Message], reply: str, max_length: int | None) -> Encoded:
    """`prompt` + `reply` as token ids, labelled on the reply's tokens only (cut to `max_length`)."""
    ids, n = chat.reply_ids(prompt, reply)
    labels = [-100] * (len(ids) - n) + ids[len(ids) - n :]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


def reply_logps(model: Any, seqs: list[Encoded], pad_id: int, keep_logits: bool, width: int) -> torch.Tensor:
    """[len(seqs), width]: each reply's per-token log-probabilities under the model, left-aligned (a
    reply's labelled tokens are contiguous, in row-major order), zeros past its length."""
    import torch

    batch = {k: v.to(model.device) for k, v in collate(seqs, pad_id).items()}
    values, _ = labelled_logps(model, batch, keep_logits)
    lengths = torch.tensor([sum(t != -100 for t in labels) for _, labels in seqs], device=values.device)
    mask = torch.arange(width, device=values.device).unsqueeze(0) < lengths.unsqueeze(1)
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


@dataclass
class SampledBatch:
    """The replies of one sampled batch that train (groups with a signal), and what their loss needs."""

    seqs: list[Encoded]
    advantages: Any  # [B]
    mask: Any  # [B, width]
    old: Any  # [B, width] at sampling time (taken by the first update; None until then)
    ref: Any  # [B, width] the reference's; None: beta 0
    reward: float  # mean reward of every reply sampled
    skipped: float  # share of the groups that gave no signal


class GrpoStep:
    """`optimize`'s step for GRPO: at a batch's first update, sample and score its replies and keep the
    groups with a signal; at every update, the forward and backward passes of the loss over them, a
    micro-batch of prompts' replies at a time."""

    def __init__(
        self,
        model: Any,
        prompts: list[EncodedPrompt],
        pad_id: int,
        settings: FinetuneSettings,
        rng: random.Random,
        rollout: Rollout,
        result: TrainResult,
    ) -> None:
        self.model, self.prompts, self.pad_id, self.settings = model, prompts, pad_id, settings
        self.rng, self.rollout, self.result = rng, rollout, result
        self.keep_logits = accepts_logits_to_keep(model)
        self.dtype = autocast_dtype(settings.precision, model.device)
        group = settings.grpo_group
        self.micro_rows = min(settings.micro_batch_size or settings.batch_size, settings.batch_size) * group
        self.batch: SampledBatch | None = None

    def __call__(self, idx: list[int], update: int) -> StepOutcome:
        if update == 0:
            self.batch = self.sample(idx)
        b = self.batch
        assert b is not None
        loss, kl = self.accumulate(b) if b.seqs else (0.0, 0.0)
        extra = {"reward": b.reward, "kl": kl, "skipped_groups": b.skipped}
        for name, value in {"loss": loss, **extra}.items():
            self.result.curves.setdefault(name, []).append(value)
        return loss, extra

    def logps(self, seqs: list[Encoded], width: int) -> torch.Tensor:
        """[B, width] per-token log-probabilities of the replies as the model computes now, without
        gradients, a micro-batch at a time."""
        import torch

        with torch.no_grad():
            parts = [
                self.forward(seqs[lo : lo + self.micro_rows], width)
                for lo in range(0, len(seqs), self.micro_rows)
            ]
        return torch.cat(parts)

    def forward(self, seqs: list[Encoded], width: int) -> torch.Tensor:
        """[B, width] per-token log-probabilities of a micro-batch of replies, in the finetune's precision."""
        import torch

        enabled = self.dtype is not None
        with torch.autocast(self.model.device.type, dtype=self.dtype or torch.float32, enabled=enabled):
            return reply_logps(self.model, seqs, self.pad_id, self.keep_logits, width).float()

    def sample(self, idx: list[int]) -> SampledBatch:
        import torch

        s, group, chat = self.settings, self.settings.grpo_group, self.rollout.chat
        asked = [self.prompts[i] for i in idx for _ in range(group)]
        sampling = replace(s.sampling, seed=self.rng.randrange(2**31))
        self.model.eval()
        try:
            replies = self.rollout.sample([m for m, _ in asked], sampling)
        finally:
            self.model.train()
        rewards = torch.tensor(self.rollout.reward(replies, [c for _, c in asked]), dtype=torch.float32)
        rewards = rewards.view(len(idx), group)
        advantages = group_advantages(rewards, scale=s.grpo_loss != "dr_grpo")
        signal = ~torch.isclose(rewards.std(dim=1), torch.zeros(len(idx)))
        rows = [p * group + g for p in range(len(idx)) if signal[p] for g in range(group)]
        totals = self.result.totals
        totals["sampled_replies"] = totals.get("sampled_replies", 0) + len(asked)
        totals["groups"] = totals.get("groups", 0) + len(idx)
        totals["groups_without_signal"] = totals.get("groups_without_signal", 0) + int((~signal).sum())
        seqs = [reply_encoded(chat, asked[r][0], replies[r], s.max_length) for r in rows]
        reward, skipped = rewards.mean().item(), 1.0 - signal.float().mean().item()
        if not seqs:
            return SampledBatch([], None, None, None, None, reward, skipped)
        lengths = torch.tensor([sum(t != -100 for t in labels) for _, labels in seqs])
        width = int(lengths.max())
        mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
        ref = None
        if s.grpo_beta != 0.0:
            with self.rollout.reference():
                ref = self.logps(seqs, width)
        return SampledBatch(seqs, advantages.view(-1)[rows], mask, None, ref, reward, skipped)

    def accumulate(self, b: SampledBatch) -> tuple[float, float]:
        """Forward and backward of the loss over the batch's replies, `micro_rows` at a time: the gradients
        add up to those of the loss over all of them. Returns that loss and the mean per-token KL."""
        import torch

        s, total, n = self.settings, 0.0, len(b.seqs)
        width = b.mask.shape[1]
        kl_sum = 0.0
        device = self.model.device
        # the first update's log-probabilities are the sampling-time ones the later updates clip against:
        # the weights have not moved yet (no second forward pass for them, unlike TRL)
        first: list[torch.Tensor] | None = [] if b.old is None and s.grpo_updates > 1 else None
        for lo in range(0, n, self.micro_rows):
            part = slice(lo, lo + self.micro_rows)
            logps = self.forward(b.seqs[part], width)
            mask = b.mask[part].to(device)
            old = logps.detach() if b.old is None else b.old[part].to(device)
            if first is not None:
                first.append(old)
            ref = None if b.ref is None else b.ref[part].to(device)
            loss = grpo_loss(
                logps, old, ref, b.advantages[part].to(device), mask,
                beta=s.grpo_beta, epsilon=s.grpo_epsilon, loss_type=s.grpo_loss,
                max_tokens=s.sampling.max_new_tokens, rows=n, tokens=float(b.mask.sum()),
            )  # fmt: skip
            loss.backward()
            total += loss.item()
            if ref is not None:
                delta = (ref - logps.detach()).clamp(max=50.0)
                kl_sum += float(((torch.exp(delta) - delta - 1) * mask).sum())
        if first is not None:
            b.old = torch.cat(first)
        return total, kl_sum / max(1.0, float(b.mask.sum()))


def grpo_loop(
    model: Any,
    params: list[Any],
    prompts: list[EncodedPrompt],
    pad_id: int,
    settings: FinetuneSettings,
    rng: random.Random,
    on_step: StepCallback | None = None,
    rollout: Rollout | None = None,
) -> TrainResult:
    """Train `params` of `model` by GRPO on `prompts`: `batch_size` prompts per sampled batch, each batch
    `grpo_updates` optimizer steps; `on_step` sees each step's loss, the batch's mean reward, the KL to the
    reference and the share of its groups without a signal."""
    if rollout is None:
        raise MftError("GRPO samples replies while it trains: it needs the hf backend's sampler and a reward")
    result = TrainResult()
    step = GrpoStep(model, prompts, pad_id, settings, rng, rollout, result)
    lengths = [len(rollout.chat.prompt_ids(m)) for m, _ in prompts]
    with dropout_off(model):  # the old and reference log-probabilities are taken without dropout too
        result.losses = optimize(model, params, lengths, settings, rng, step, on_step, settings.grpo_updates)
    return result


def sampler(backend: Any, name: str, out_dir: Any) -> Sampler:
    """GRPO's sampling as agent `name` of the hf backend `backend` while it trains: through the backend's
    own `generate`, as the adapter being trained (its weights in memory, which `out_dir` will hold)."""
    from mft.backends.base import Agent, GenerationRequest

    backend.agents[name] = Agent(name, str(out_dir))
    return lambda prompts, s: backend.generate([GenerationRequest(name, p) for p in prompts], s)


def engine_sampler(engine: Any, trainer: Any, name: str, scratch: Path) -> Sampler:
    """GRPO's sampling as agent `name` (training in the hf backend `trainer`) by another backend `engine`
    (vLLM): before each sampled batch the adapter as it is now is saved to `scratch` and served by the
    engine under a fresh LoRA id (it caches weights by id), so the replies are the current policy's."""
    from mft.backends.base import Agent, GenerationRequest
    from mft.backends.hf.finetune import save_adapter

    serving = f"{name}@sampling"

    def sample(prompts: list[list[Message]], sampling: Sampling) -> list[str]:
        scratch.mkdir(parents=True, exist_ok=True)
        save_adapter(trainer.loaded.model, name, scratch)
        engine.add_agent(Agent(serving, str(scratch)))
        replies: list[str] = engine.generate([GenerationRequest(serving, p) for p in prompts], sampling)
        return replies

    return sample


@contextlib.contextmanager
def rollout_for(
    loaded: LoadedModel,
    name: str,
    init_adapter: str | None,
    settings: FinetuneSettings,
    sample: Sampler | None,
) -> Iterator[Rollout]:
    """The rollout of agent `name`'s GRPO finetune in `loaded.model` (its adapter already added): `sample`,
    the settings' reward, and the reference -- the base (adapters off), or with `grpo_reference: previous`
    the agent's weights before this finetune (`init_adapter`, loaded as a second adapter for the duration)."""
    if sample is None or settings.reward is None:
        raise MftError(
            f"agent {name!r}: GRPO samples replies while it trains and scores them by a reward",
            hint="finetune it through the hf (or vllm) backend in a run, which sets both",
        )
    model = loaded.model
    ref_name = f"{name}__reference"
    previous = settings.grpo_reference == "previous" and init_adapter is not None

    @contextlib.contextmanager
    def as_previous() -> Iterator[None]:
        model.set_adapter(ref_name)
        try:
            yield
        finally:
            model.set_adapter(name)  # peft: this adapter's weights trainable again, every other not

    if previous:
        model.load_adapter(str(init_adapter), adapter_name=ref_name)
        model.set_adapter(name)
    try:
        yield Rollout(
            sample, settings.reward, as_previous if previous else model.disable_adapter, loaded.chat
        )
    finally:
        if previous:
            model.delete_adapter(ref_name)
            model.set_adapter(name)


# The GRPO objective's loss module (`mft/objectives.py`): encode, loop, train_stats, and (online) rollout_for.
loop = grpo_loop


def train_stats(settings: FinetuneSettings) -> dict[str, Any]:
    """The objective and its settings (the reward and KL per step are in the result's curves)."""
    return {
        "objective": "grpo",
        "grpo_group": settings.grpo_group,
        "grpo_loss": settings.grpo_loss,
        "grpo_beta": settings.grpo_beta,
        "grpo_epsilon": settings.grpo_epsilon,
        "grpo_updates": settings.grpo_updates,
        "grpo_reference": settings.grpo_reference,
    }
