"""Peak memory of finetuning with and without activation checkpointing + gradient accumulation, same update.

Each setting trains the same LoRA adapter on the same batch of a larger tiny Llama (random weights, built
here) in a fresh process, and reports that process's peak RSS (`VmHWM`), the loss, and the largest
difference between the trained adapters' weights. The two settings compute the same update (to float
rounding): only the memory differs.

    python benchmarks/finetune_memory.py [--hidden 512 --layers 8 --seq 512 --batch 16 --micro 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def build_model(out: Path, hidden: int, layers: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    LlamaForCausalLM(config).save_pretrained(out)


def train_once(
    model_dir: str, seq: int, batch: int, micro: int | None, checkpointing: bool
) -> dict[str, Any]:
    """One optimizer step on a fixed batch in this process; the adapter's weights and the loss."""
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mft.backends.base import FinetuneSettings
    from mft.backends.hf.train import train_loop

    torch.set_num_threads(2)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    encoded = []
    for _ in range(batch):
        ids = torch.randint(3, 1024, (seq,), generator=g).tolist()
        encoded.append((ids, [-100] * (seq // 2) + ids[seq // 2 :]))  # the second half is "the answer"
    settings = FinetuneSettings(
        epochs=1,
        batch_size=batch,
        lr=1e-3,
        precision="fp32",
        group_by_length=False,
        micro_batch_size=micro,
        gradient_checkpointing=checkpointing,
    )
    result = train_loop(model, params, encoded, 0, settings, random.Random(0))
    weights = {n: p.detach().flatten()[:64].tolist() for n, p in model.named_parameters() if "lora_" in n}
    return {"loss": result.losses[0], "weights": weights, "peak_mib": peak_rss_kib() / 1024}


def peak_rss_kib() -> int:
    """This process's own peak RSS. On Linux the high-water mark of its memory map (VmHWM), which starts
    afresh at exec: `ru_maxrss` would report the parent's RSS at fork when that is larger."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(model_dir: Path, seq: int, batch: int, micro: int | None, checkpointing: bool) -> dict[str, Any]:
    """`train_once` in a fresh Python process (so the peak RSS is that setting's alone)."""
    here, args = (
        str(Path(__file__).parent),
        f"{str(model_dir)!r}, {seq}, {batch}, {micro!r}, {checkpointing!r}",
    )
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); from finetune_memory import train_once; "
        f"print(json.dumps(train_once({args})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def compare(hidden: int, layers: int, seq: int, batch: int, micro: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, hidden, layers)
        plain = measure(model_dir, seq, batch, None, False)
        lean = measure(model_dir, seq, batch, micro, True)
    diff = max(
        abs(a - b)
        for name in plain["weights"]
        for a, b in zip(plain["weights"][name], lean["weights"][name], strict=True)
    )
    return {"plain": plain, "lean": lean, "max_weight_diff": diff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=2)
    args = ap.parse_args(argv)
    r = compare(args.hidden, args.layers, args.seq, args.batch, args.micro)
    print(f"tiny Llama: hidden {args.hidden}, {args.layers} layers; batch {args.batch} x {args.seq} tokens")
    print(f"  whole batch, no checkpointing:            peak RSS {r['plain']['peak_mib']:8.0f} MiB")
    print(f"  micro-batches of {args.micro} + checkpointing:       peak RSS {r['lean']['peak_mib']:8.0f} MiB")
    print(
        f"  ratio {r['plain']['peak_mib'] / r['lean']['peak_mib']:.2f}x; loss {r['plain']['loss']:.6f} vs "
        f"{r['lean']['loss']:.6f}; largest adapter weight difference {r['max_weight_diff']:.2e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
