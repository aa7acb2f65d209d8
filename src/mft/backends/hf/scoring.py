"""Teacher-forced scoring of given replies by an agent of the hf backend (cross-agent NLL and KL).

It is handed the loaded model (`model.LoadedModel`) and the model that computes as the agent (the backend
makes its adapter active, merged where lossless, as for generation), not the backend. Replies are scored in
length-sorted batches sized by tokens, as generation is (`score_budget`).
"""

from __future__ import annotations

from typing import Any

from mft.backends.hf.model import LoadedModel, accepts_logits_to_keep, free_token_budget, left_pad, slices
from mft.records import Message

CPU_SCORE_TOKENS = 2048  # rows x padded width of a scoring forward on a CPU (measured: docs/performance.md)


def score_budget(setting: int | str, model: Any) -> tuple[int | None, int | None]:
    """How much one scoring forward of `model` may take: (rows x padded width, rows x kept positions).

    `setting` is the backend's `score_tokens`: a number caps the first (0: no cap); "auto" is 2048 on a
    CPU (a forward's activations stay in the CPU's caches: several short forwards beat one long one, as in
    prefill, docs/performance.md) and on a GPU what fits in its free memory: the tokens generation's cache
    would take (`free_token_budget`), and kept positions whose logits, their float32 log-softmax and the
    copy returned take at most a quarter of it (a 128k vocabulary is 1.5 MB a position in bfloat16)."""
    import torch

    if setting != "auto":
        return int(setting) or None, None
    if model.device.type != "cuda":
        return CPU_SCORE_TOKENS, None
    free, _ = torch.cuda.mem_get_info(model.device)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    per_position = vocab * (torch.finfo(model.dtype).bits // 8 + 8)
    return free_token_budget(model), max(1, free // 4 // per_position)


def plan_score_batches(
    order: list[int],
    widths: list[int],
    replies: list[int],
    max_rows: int,
    max_tokens: int | None,
    max_positions: int | None,
) -> list[list[int]]:
    """Consecutive slices of `order` (indices sorted by sequence width): at most `max_rows` rows, rows x
    the widest row at most `max_tokens` and rows x (the longest reply + 1) at most `max_positions` (the
    logits kept), each with one row at least."""

    def too_big(rows: list[int]) -> bool:
        if max_tokens is not None and len(rows) * max(widths[i] for i in rows) > max_tokens:
            return True
        return max_positions is not None and len(rows) * (max(replies[i] for i in rows) + 1) > max_positions

    return slices(order, max_rows, too_big)


def score_responses(
    loaded: LoadedModel,
    model: Any,
    prompts: list[list[Message]],
    responses: list[str],
    batch_size: int,
    budget: tuple[int | None, int | None] = (None, None),
) -> list[tuple[Any, Any]]:
    """An agent's next-token distributions on given replies (teacher forcing), in request order, computed
    by `model`: `loaded.model` while the agent's adapter is active (or merged, or adapters disabled for the
    bare base: the caller's context), or a fully finetuned agent's own model. Batches of at most
    `batch_size` replies, within `budget` (`score_budget`).

    For each example: `(token_ids [T], logprobs [T, V])`, both on the model's device, logprobs float32:
    the T tokens of `responses[i]` as the chat template renders it as the assistant reply to
    `prompts[i]` -- the tokens generation would produce, end-of-turn token included (anything the
    template appends after it is not) -- and the log-softmax over the whole vocabulary at each of them.
    Batched like `generate` (left padding, length-sorted); only the reply positions' logits are computed.
    """
    import torch

    seqs = [loaded.chat.reply_ids(p, r) for p, r in zip(prompts, responses, strict=True)]
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    keep_arg = accepts_logits_to_keep(core)
    device = core.device
    pad = loaded.tokenizer.pad_token_id
    out: list[tuple[Any, Any]] = [None] * len(seqs)  # type: ignore[list-item]
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
    widths, replies = [len(s[0]) for s in seqs], [s[1] for s in seqs]
    was_training = model.training
    if was_training:
        model.eval()  # dropout off; toggled only when needed (it walks every module)
    try:
        for idx in plan_score_batches(order, widths, replies, batch_size, *budget):
            width = max(widths[i] for i in idx)
            ids, mask = left_pad([seqs[i][0] for i in idx], pad)
            # left padding: positions count from each row's first real token, as generate() does
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            t_max = max(replies[i] for i in idx)
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(device),
                "attention_mask": mask.to(device),
                "position_ids": positions.to(device),
                "use_cache": False,
            }
            if keep_arg:  # replies end every row: the last t_max + 1 positions hold all their logits
                kwargs["logits_to_keep"] = t_max + 1
            with torch.no_grad():
                logits = model(**kwargs).logits
                logits = logits[:, -(t_max + 1) :]
                for row, i in enumerate(idx):
                    t = replies[i]
                    # logits at position k predict token k + 1: reply tokens width-t .. width-1
                    lp = torch.log_softmax(logits[row, t_max - t : t_max].float(), dim=-1)
                    out[i] = (ids[row, width - t :].to(lp.device), lp)
            del logits
    finally:
        if was_training:
            model.train()
    return out
