"""Teacher-forced scoring of given replies by an agent of the hf backend (cross-agent NLL and KL)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mft.backends.hf.model import accepts_logits_to_keep, left_pad
from mft.records import Message

if TYPE_CHECKING:
    from mft.backends.hf import HFBackend


def score_responses(
    backend: HFBackend,
    agent: str,
    prompts: list[list[Message]],
    responses: list[str],
    batch_size: int | None = None,
) -> list[tuple[Any, Any]]:
    """Agent `agent`'s next-token distributions on given replies (teacher forcing), in request order.

    For each example: `(token_ids [T], logprobs [T, V])`, both on the model's device, logprobs float32:
    the T tokens of `responses[i]` as the chat template renders it as the assistant reply to
    `prompts[i]` -- the tokens generation would produce, end-of-turn token included (anything the
    template appends after it is not) -- and the log-softmax over the whole vocabulary at each of them.
    Batched like `generate` (left padding, length-sorted); only the reply positions' logits are computed.
    """
    import torch

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    adapter = backend.adapter_of(agent)
    model = backend.full_models.get(agent, backend.model)
    core = backend.full_models.get(agent, backend.base)
    seqs = [backend.chat.reply_ids(p, r) for p, r in zip(prompts, responses, strict=True)]

    keep_arg = accepts_logits_to_keep(core)
    pad = backend.tokenizer.pad_token_id
    bs = batch_size or backend.batch_size
    out: list[tuple[Any, Any]] = [None] * len(seqs)  # type: ignore[list-item]
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
    was_training = model.training
    model.eval()  # peft's per-row adapter routing is inference-only
    try:
        for lo in range(0, len(order), bs):
            idx = order[lo : lo + bs]
            width = max(len(seqs[i][0]) for i in idx)
            ids, mask = left_pad([seqs[i][0] for i in idx], pad)
            # left padding: positions count from each row's first real token, as generate() does
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            t_max = max(seqs[i][1] for i in idx)
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(backend.device),
                "attention_mask": mask.to(backend.device),
                "position_ids": positions.to(backend.device),
                "use_cache": False,
            }
            if keep_arg:  # replies end every row: the last t_max + 1 positions hold all their logits
                kwargs["logits_to_keep"] = t_max + 1
            if agent not in backend.full_models and backend.model is not backend.base:
                kwargs["adapter_names"] = [adapter] * len(idx)
            with torch.no_grad():
                logits = model(**kwargs).logits
                logits = logits[:, -(t_max + 1) :]
                for row, i in enumerate(idx):
                    t = seqs[i][1]
                    # logits at position k predict token k + 1: reply tokens width-t .. width-1
                    lp = torch.log_softmax(logits[row, t_max - t : t_max].float(), dim=-1)
                    out[i] = (ids[row, width - t :].to(lp.device), lp)
            del logits
    finally:
        model.train(was_training)
    return out
