"""The hf backend's trainer: per-agent LoRA (or full) finetuning on the shared base (transformers + peft).

Each agent is trained on its own chat examples only, with the loss on assistant tokens only, starting from
its own previous adapter (or a fresh LoRA on the base). The adapter lives in the backend's one PeftModel
next to every other agent's adapter; only the trained agent's LoRA weights receive gradients, so the other
agents stay bit-identical (tested).

Why a hand-written loop and not TRL's SFTTrainer: the loop trains one adapter in place inside the backend's
shared multi-adapter PeftModel (no second copy of the base, the other agents stay loaded and untouched),
with the same maths as SFTTrainer (AdamW, linear decay, assistant-only loss, grad clipping). At the same
settings it runs at about the same tokens/s as SFTTrainer (`benchmarks/finetune_throughput.py`, 1.08x in
fp32 on the bundled model, docs/performance.md); its defaults add length-grouped batches and bf16
autocast where the device has native bf16 (`FinetuneSettings`; 1.68x on critic-sized data,
`benchmarks/finetune_settings.py`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mft.backends.base import FinetuneSettings, resolve_model_path
from mft.errors import MftError
from mft.faults import checkpoint
from mft.records import Message, write_json_atomic

if TYPE_CHECKING:
    import torch

    from mft.backends.hf import HFBackend

Encoded = tuple[list[int], list[int]]  # token ids, labels (-100 off the assistant turns)


def tokenize_chat(tok: Any, messages: list[Message]) -> tuple[list[int], list[int]]:
    """Ids of the chat as its template renders it, and labels that are -100 except on assistant turns.

    Works for any chat template: the assistant span of turn i is the difference between the rendering of
    messages[:i] with a generation prompt and the rendering of messages[:i+1].
    """
    dumped = [m.model_dump() for m in messages]
    full = tok.apply_chat_template(dumped, tokenize=False)
    ids = tok.encode(full, add_special_tokens=False)
    labels = [-100] * len(ids)
    for i, m in enumerate(messages):
        if m.role != "assistant":
            continue
        start = len(
            tok.encode(
                tok.apply_chat_template(dumped[:i], tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )
        )
        end = len(
            tok.encode(tok.apply_chat_template(dumped[: i + 1], tokenize=False), add_special_tokens=False)
        )
        labels[start:end] = ids[start:end]
    return ids, labels


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


def _train(
    model: Any,
    params: list[Any],
    encoded: list[Encoded],
    pad_id: int,
    settings: FinetuneSettings,
    rng: random.Random,
) -> list[float]:
    """The training loop shared by LoRA and full finetuning: AdamW, linear decay, clipping, seeded order."""
    import torch

    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    steps = settings.epochs * ((len(encoded) + settings.batch_size - 1) // settings.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(1, steps))
    model.train()
    losses: list[float] = []
    dtype = autocast_dtype(settings.precision, model.device)
    lengths = [len(ids) for ids, _ in encoded]
    for _ in range(settings.epochs):
        for idx in batch_order(lengths, settings.batch_size, rng, settings.group_by_length):
            batch = collate([encoded[i] for i in idx], pad_id)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return losses


def train_full(
    backend: HFBackend,
    name: str,
    init_model: str | None,
    examples: list[list[Message]],
    out_dir: Path,
    settings: FinetuneSettings,
) -> tuple[Any, dict[str, Any]]:
    """Full finetuning (`method: full`): a copy of the base (or of this agent's previous full model) with
    every weight trained, saved with save_pretrained to `out_dir` (temp dir, then rename). Costs one model's
    memory per agent, unlike LoRA agents which share the base."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    if not examples:
        raise MftError(f"agent {name!r}: no training examples")
    rng = random.Random(f"finetune:{settings.seed}:{name}")
    torch.manual_seed(rng.randrange(2**31))
    # Reload from disk rather than copy `backend.base`: peft injects LoRA layers into the base in place.
    source = init_model if init_model is not None else resolve_model_path(backend.model_name)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=backend.base.dtype).to(backend.device)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    tok = backend.tokenizer
    losses = _train(
        model, params, [tokenize_chat(tok, ex) for ex in examples], tok.pad_token_id, settings, rng
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    stats = {
        "examples": len(examples),
        "steps": len(losses),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "method": "full",
    }
    write_json_atomic(tmp / "train_stats.json", stats)
    checkpoint(f"save model {out_dir.name}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return model, stats


def train_adapter(
    backend: HFBackend,
    name: str,
    init_adapter: str | None,
    examples: list[list[Message]],
    out_dir: Path,
    settings: FinetuneSettings,
) -> dict[str, Any]:
    """Train adapter `name` in `backend` (an HFBackend) and save it to `out_dir` (temp dir, then rename)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    if not examples:
        raise MftError(f"agent {name!r}: no training examples")
    tok = backend.tokenizer
    rng = random.Random(f"finetune:{settings.seed}:{name}")
    torch.manual_seed(rng.randrange(2**31))  # seeds the fresh LoRA initialisation and dropout
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules
        if isinstance(settings.target_modules, str)
        else list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    if backend.model is backend.base:
        backend.model = PeftModel(backend.base, config, adapter_name=name)
    elif name in backend.model.peft_config:
        backend.model.delete_adapter(name)
        backend.model.add_adapter(name, config)
    else:
        backend.model.add_adapter(name, config)
    model = backend.model
    if init_adapter is not None:  # continue from this agent's previous-iteration weights
        init = Path(init_adapter)
        set_peft_model_state_dict(
            model, load_file(str(init / "adapter_model.safetensors")), adapter_name=name
        )
    model.set_adapter(name)
    params = [p for n, p in model.named_parameters() if f".{name}." in n and "lora_" in n]
    for n, p in model.named_parameters():
        p.requires_grad_(f".{name}." in n and "lora_" in n)
    losses = _train(
        model, params, [tokenize_chat(tok, ex) for ex in examples], tok.pad_token_id, settings, rng
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=name)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp / "adapter_model.safetensors")
    )
    model.peft_config[name].save_pretrained(str(tmp))
    # peft stores resolved target modules as a set, written in hash order; sort it so that the same training
    # gives a byte-identical adapter directory in every process
    cfg_path = tmp / "adapter_config.json"
    cfg_data = json.loads(cfg_path.read_text())
    if isinstance(cfg_data.get("target_modules"), list):
        cfg_data["target_modules"] = sorted(cfg_data["target_modules"])
    cfg_path.write_text(json.dumps(cfg_data, indent=2, sort_keys=True) + "\n")
    stats = {
        "examples": len(examples),
        "steps": len(losses),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    write_json_atomic(tmp / "train_stats.json", stats)
    checkpoint(f"save adapter {out_dir.name}")
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return stats
