"""A transformers causal LM and its tokenizer, loaded (`LoadedModel`); the batches of generate and scoring,
sized to fit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mft.backends.chat import ChatFormat
from mft.backends.hub import loadable
from mft.errors import MftError

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed-batch inference


@dataclass(eq=False)
class LoadedModel:
    """One base model loaded for the hf backend, and the model its agents' LoRA adapters live in.

    What the trainer (`finetune`), the scorer (`scoring`) and adapter loading (`adapters`) are handed: the
    backend holds one and delegates to it, so none of them needs the backend. Its repr names the model only
    (not its layers)."""

    name: str  # the model as configured: "bundled", a hub id or a local directory
    base: Any = field(repr=False)  # the transformers causal LM
    tokenizer: Any = field(repr=False)  # its tokenizer (left padding, a pad token)
    # how prompts are rendered, where turns end (every stop id), what training trains on
    chat: ChatFormat = field(repr=False)
    # `base`, or the PeftModel wrapping it that holds the agents' adapters: the trainer makes it one when
    # it adds the first adapter (so does loading a saved adapter)
    model: Any = field(repr=False)

    @property
    def device(self) -> Any:
        """Where the base's weights are (and the batches go)."""
        return self.base.device

    @property
    def has_adapters(self) -> bool:
        """Whether `model` is a PeftModel (some adapter was added), not the bare base."""
        return self.model is not self.base

    def context_length(self) -> int | None:
        """The most positions (prompt + new tokens) the model attends to, from its config; None if unknown."""
        config = self.base.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def drop_adapter(self, name: str) -> None:
        """Remove adapter `name` from `model`, if it holds one by that name."""
        if self.has_adapters and name in self.model.peft_config:
            self.model.delete_adapter(name)


def load_base(
    model: str,
    device: str | None = None,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[Any, Any, list[str]]:
    """Load a causal LM and its tokenizer from a local directory or a hub id (`from_pretrained`), with the
    warnings about what in them differs from what they claim (`weight_warnings`, `prepare_base`).

    `attn_implementation` ("sdpa", "eager", "flash_attention_2", ...) and `device_map` ("auto" shards a
    model too big for one device over the visible ones) are passed to `from_pretrained` as given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard loading bars; our own progress bars say what matters

    path = loadable(model)  # a hub id the hub cannot serve: its cached copy, or one line at once
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    options: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    if device_map is not None:
        options["device_map"] = device_map
    try:
        with quiet_loading():
            tok = AutoTokenizer.from_pretrained(path)
            lm, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **options)
    except (OSError, ValueError) as exc:  # not found, offline, no network, not a model: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if Path(path).exists():
            raise MftError(
                f"could not load model {path!r}: {first}", hint="check that directory holds a saved model"
            ) from exc
        raise MftError(
            f"could not load model {path!r}: it is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({first})",
            hint="check the hub id's spelling, download it once with network access (it is cached), or give "
            "a local directory",
        ) from exc
    # with a device map the weights are already placed
    lm, tok, notes = prepare_base(lm, tok, path, device if device_map is None else None)
    return lm, tok, weight_warnings(model, info) + notes


def weight_warnings(model: str, info: dict[str, Any]) -> list[str]:
    """One line per kind of weight the checkpoint and the architecture disagree on (transformers' loading
    report, which `quiet_loading` keeps off the terminal): each changes what the model computes."""
    kinds = {
        "missing_keys": "missing from the checkpoint, initialised at random",
        "mismatched_keys": "of another shape in the checkpoint, initialised at random",
        "unexpected_keys": "in the checkpoint but not used by the architecture",
    }
    out = []
    for key, what in kinds.items():
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            out.append(f"model {model!r}: {len(names)} weight(s) {what} ({names[0]}{more})")
    return out


def prepare_base(lm: Any, tok: Any, path: str, device: str | None = None) -> tuple[Any, Any, list[str]]:
    """A loaded (or already built) causal LM and its tokenizer made ready for the backend: a chat template
    checked, a pad token, left padding, the weights moved to `device` (None: left where they are), eval
    mode. `path` names the model in the error. Also returns the warnings about what was changed."""
    if tok.chat_template is None:
        raise MftError(
            f"model {path!r} has no chat template", hint="use an instruction-tuned model or add one"
        )
    notes = []
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
        notes.append(
            f"model {path!r}: its tokenizer has no pad token; padding with its end-of-sequence token "
            f"{tok.eos_token!r} (masked out of attention and of the loss)"
        )
    tok.padding_side = "left"
    if device is not None:
        lm.to(device)
    lm.eval()
    return lm, tok, notes


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' and huggingface_hub's log messages and Python warnings silenced while a model loads: a
    hub id that cannot be fetched prints a dozen retry messages before its error, which becomes one line
    (`load_base`); loading notes of a model that does load are library chatter too, except what changes
    the model, which `weight_warnings` reports. With `--debug` (MFT_DEBUG set) nothing is silenced."""
    import logging
    import os
    import warnings

    if os.environ.get("MFT_DEBUG"):
        yield
        return

    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (compute the output head only at some positions);
    a peft model is asked about the model it wraps."""
    import inspect

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(core.forward).parameters


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Bytes of KV cache one token takes in every layer (keys and values), from the model's config."""
    layers = int(config.num_hidden_layers)
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    return 2 * layers * heads * head_dim * dtype_bytes


def free_token_budget(model: Any, share: float = 0.5) -> int | None:
    """How many cached tokens (rows x (prompt + new tokens)) fit in `share` of the GPU's free memory, as a
    batch-size cap for generation; None off CUDA (a CPU batch is bounded by `batch_size` alone)."""
    import torch

    if model.device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(model.device)
    per_token = kv_bytes_per_token(model.config, torch.finfo(model.dtype).bits // 8)
    # the activations of the prefill and the logits of a step take about as much again as the cache
    return max(1, int(share * free) // (2 * per_token))


def slices(order: list[int], max_rows: int, too_big: Callable[[list[int]], bool]) -> list[list[int]]:
    """Consecutive slices of `order`: each grows while it has at most `max_rows` rows and `too_big` does not
    refuse it (a slice of one row is never refused). The one batch planner of generation and scoring."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_rows or too_big([*current, i])):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def plan_batches(
    order: list[int], lengths: list[int], max_rows: int, max_new: int, budget: int | None
) -> list[list[int]]:
    """Consecutive slices of `order` (indices sorted by prompt length): at most `max_rows` rows each, and,
    with a `budget`, at most `budget` cached tokens (rows x (longest prompt + max_new)); one row at least."""
    if budget is None:
        return slices(order, max_rows, lambda rows: False)
    return slices(
        order, max_rows, lambda rows: len(rows) * (max(lengths[j] for j in rows) + max_new) > budget
    )


@contextlib.contextmanager
def on_device(model: Any, device: Any, offload: bool) -> Iterator[Any]:
    """`model` on `device` for the duration; with `offload`, back to the CPU afterwards (a fully finetuned
    agent's own model takes a whole model's memory: one at a time on the GPU)."""
    if offload:
        model.to(device)
    try:
        yield model
    finally:
        if offload:
            model.to("cpu")
