"""Teacher-forced scoring of given replies by an agent of the hf backend (cross-agent NLL and KL).

It is handed the loaded model (`model.LoadedModel`) and the agent's adapter or own model, not the backend.
"""

from __future__ import annotations

from typing import Any

from mft.backends.hf.model import LoadedModel, accepts_logits_to_keep, left_pad
from mft.records import Message


def score_responses(
    loaded: LoadedModel,
    adapter: str,
    full_model: Any | None,
    prompts: list[list[Message]],
    responses: list[str],
    batch_size: int,
) -> list[tuple[Any, Any]]:
    """An agent's next-token distributions on given replies (teacher forcing), in request order: the agent
    of `adapter` in `loaded.model` (`BASE_ADAPTER`: the bare base), or, where it has one (a fully finetuned
    agent), its own `full_model`. At most `batch_size` replies a forward.

    For each example: `(token_ids [T], logprobs [T, V])`, both on the model's device, logprobs float32:
    the T tokens of `responses[i]` as the chat template renders it as the assistant reply to
    `prompts[i]` -- the tokens generation would produce, end-of-turn token included (anything the
    template appends after it is not) -- and the log-softmax over the whole vocabulary at each of them.
    Batched like `generate` (left padding, length-sorted); only the reply positions' logits are computed.
    """
    import torch

    model = loaded.model if full_model is None else full_model
    core = loaded.base if full_model is None else full_model
    seqs = [loaded.chat.reply_ids(p, r) for p, r in zip(prompts, responses, strict=True)]

    keep_arg = accepts_logits_to_keep(core)
    pad = loaded.tokenizer.pad_token_id
    out: list[tuple[Any, Any]] = [None] * len(seqs)  # type: ignore[list-item]
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
    was_training = model.training
    model.eval()  # peft's per-row adapter routing is inference-only
    try:
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids, mask = left_pad([seqs[i][0] for i in idx], pad)
            # left padding: positions count from each row's first real token, as generate() does
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            t_max = max(seqs[i][1] for i in idx)
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(loaded.device),
                "attention_mask": mask.to(loaded.device),
                "position_ids": positions.to(loaded.device),
                "use_cache": False,
            }
            if keep_arg:  # replies end every row: the last t_max + 1 positions hold all their logits
                kwargs["logits_to_keep"] = t_max + 1
            if full_model is None and loaded.has_adapters:
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
