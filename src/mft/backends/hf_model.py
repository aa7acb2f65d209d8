"""A transformers causal LM and its tokenizer, loaded; the left-padded batches of generate and scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mft.backends.base import resolve_model_path
from mft.errors import MftError

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed-batch inference


def load_base(model: str, device: str | None = None, dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local directory or a hub id (`from_pretrained`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard loading bars; our own progress bars say what matters

    path = resolve_model_path(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as exc:
        raise MftError(
            f"could not load model {path!r}: {str(exc).splitlines()[0]}",
            hint="check the path or hub id; offline machines need a local directory",
        ) from exc
    if tok.chat_template is None:
        raise MftError(
            f"model {path!r} has no chat template", hint="use an instruction-tuned model or add one"
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    lm.to(device)
    lm.eval()
    return lm, tok


def is_full_model(path: Path) -> bool:
    """A saved full model (config.json + weights), as opposed to a LoRA adapter directory."""
    return (path / "config.json").exists() and not (path / "adapter_config.json").exists()


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Input ids and attention mask of `seqs`, left-padded to the longest (generation continues on the
    right, so every row's last token is its last real one)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    return ids, mask
