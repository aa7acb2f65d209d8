"""The hf backend's trainer: per-agent LoRA (or full) finetuning on the shared base (transformers + peft).

Each agent is trained on its own chat examples only, with the loss on assistant tokens only, starting from
its own previous adapter (or a fresh LoRA on the base). The adapter lives in the backend's one PeftModel
next to every other agent's adapter; only the trained agent's LoRA weights receive gradients, so the other
agents stay bit-identical (tested).

The loop itself is in the objective's loss module (`train.py`, `dpo.py`); this module sets up what it
trains (a fresh or continued LoRA adapter in the shared PeftModel, or a full copy of the model) and saves
the result atomically. It is handed the loaded model (`model.LoadedModel`), not the backend.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import random
from pathlib import Path
from typing import Any

from mft.backends.base import FinetuneSettings, StepCallback, TrainingData, resolve_model_path
from mft.backends.hf.model import LoadedModel
from mft.backends.hf.train import TrainResult
from mft.data.examples import as_data
from mft.errors import MftError
from mft.objectives import objective
from mft.records import replace_dir_atomic, write_json_atomic


def fit(
    loaded: LoadedModel,
    name: str,
    model: Any,
    params: list[Any],
    data: TrainingData,
    settings: FinetuneSettings,
    rng: random.Random,
    on_step: StepCallback | None = None,
    rollout: Any = None,
) -> TrainResult:
    """Train `params` of `model` on agent `name`'s data by the settings' objective, through its row's loss
    module (`mft/objectives.py`); `on_step` sees each optimizer step; an online objective's loop also gets
    `rollout` (its sampler, reward and reference)."""
    row = objective(settings.objective)
    loss = importlib.import_module(row.loss)
    encoded = [loss.encode(loaded.chat, item) for item in as_data(data, settings.objective, name)]
    online = {"rollout": rollout} if row.online else {}
    result: TrainResult = loss.loop(
        model, params, encoded, loaded.tokenizer.pad_token_id, settings, rng, on_step, **online
    )
    return result


def _stats(examples: int, result: TrainResult, settings: FinetuneSettings) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "examples": examples,
        "steps": len(result.losses),
        "first_loss": result.losses[0],
        "last_loss": result.losses[-1],
    }
    stats.update(importlib.import_module(objective(settings.objective).loss).train_stats(settings))
    return {**stats, **result.counts()}


def train_full(
    loaded: LoadedModel,
    name: str,
    init_model: str | None,
    examples: TrainingData,
    out_dir: Path,
    settings: FinetuneSettings,
    on_step: StepCallback | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Full finetuning (`method: full`): a copy of the base (or of this agent's previous full model) with
    every weight trained, saved with save_pretrained to `out_dir` (`replace_dir_atomic`). Costs one model's
    memory per agent, unlike LoRA agents which share the base."""
    import torch
    from transformers import AutoModelForCausalLM

    if not examples:
        raise MftError(f"agent {name!r}: no training examples")
    if objective(settings.objective).online:
        raise MftError(
            f"agent {name!r}: {settings.objective.upper()} trains LoRA adapters, not whole models",
            hint="use ft_method: lora",
        )
    rng = random.Random(f"finetune:{settings.seed}:{name}")
    torch.manual_seed(rng.randrange(2**31))
    # Reload from disk rather than copy `loaded.base`: peft injects LoRA layers into the base in place.
    source = init_model if init_model is not None else resolve_model_path(loaded.name)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=loaded.base.dtype).to(loaded.device)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    result = fit(loaded, name, model, params, examples, settings, rng, on_step)
    stats = {**_stats(len(examples), result, settings), "method": "full"}
    with replace_dir_atomic(out_dir, fault_point=f"save model {out_dir.name}") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "train_stats.json", stats)
    return model, stats


def save_adapter(model: Any, name: str, directory: Path) -> None:
    """Adapter `name` of the PeftModel `model` as peft saves one (its weights and adapter_config.json)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    # Only this adapter's own tensors, named `...lora_A.<name>.weight`. peft's own filter drops the other
    # adapters by the substring `.<other>.`, which an adapter named `model` (the one-model methods') matches
    # in every key (`base_model.model.model...`): peft then falls back to the whole state dict and saves
    # every loaded adapter into this one's file, whose stale copies overwrite them when it is loaded.
    own = {k: v for k, v in model.state_dict().items() if "lora_" in k and f".{name}." in k}
    state = get_peft_model_state_dict(model, state_dict=own, adapter_name=name)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        str(directory / "adapter_model.safetensors"),
    )
    model.peft_config[name].save_pretrained(str(directory))
    # peft stores resolved target modules as a set, written in hash order; sort it so that the same training
    # gives a byte-identical adapter directory in every process
    cfg_path = directory / "adapter_config.json"
    cfg_data = json.loads(cfg_path.read_text())
    if isinstance(cfg_data.get("target_modules"), list):
        cfg_data["target_modules"] = sorted(cfg_data["target_modules"])
    cfg_path.write_text(json.dumps(cfg_data, indent=2, sort_keys=True) + "\n")


def train_adapter(
    loaded: LoadedModel,
    name: str,
    init_adapter: str | None,
    examples: TrainingData,
    out_dir: Path,
    settings: FinetuneSettings,
    on_step: StepCallback | None = None,
    sample: Any = None,
) -> dict[str, Any]:
    """Train adapter `name` in `loaded.model` (made a PeftModel if it is the bare base) and save it to
    `out_dir` (`replace_dir_atomic`). An online objective (GRPO) samples its replies by `sample`."""
    import torch
    from peft import LoraConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    if not examples:
        raise MftError(f"agent {name!r}: no training examples")
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
    if not loaded.has_adapters:
        loaded.model = PeftModel(loaded.base, config, adapter_name=name)
    else:
        loaded.drop_adapter(name)
        loaded.model.add_adapter(name, config)
    model = loaded.model
    if init_adapter is not None:  # continue from this agent's previous-iteration weights
        init = Path(init_adapter)
        set_peft_model_state_dict(
            model, load_file(str(init / "adapter_model.safetensors")), adapter_name=name
        )
    model.set_adapter(name)
    params = [p for n, p in model.named_parameters() if f".{name}." in n and "lora_" in n]
    for n, p in model.named_parameters():
        p.requires_grad_(f".{name}." in n and "lora_" in n)
    row = objective(settings.objective)
    with (
        importlib.import_module(row.loss).rollout_for(loaded, name, init_adapter, settings, sample)
        if row.online
        else contextlib.nullcontext()
    ) as rollout:
        result = fit(loaded, name, model, params, examples, settings, rng, on_step, rollout)
    stats = _stats(len(examples), result, settings)
    with replace_dir_atomic(out_dir, fault_point=f"save adapter {out_dir.name}") as tmp:
        save_adapter(model, name, tmp)
        write_json_atomic(tmp / "train_stats.json", stats)
    return stats
