"""Test helper: a LoRA adapter with random (non-zero) weights on the bundled model, so agents differ."""

from __future__ import annotations

from pathlib import Path


def random_adapter(path: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mft.toy import CHECKPOINT_DIR

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR)
    cfg = LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    get_peft_model(base, cfg).save_pretrained(path)
    return path
