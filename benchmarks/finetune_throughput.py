"""LoRA finetuning tokens/s on the bundled model: our loop (`HFBackend.finetune`) vs TRL's `SFTTrainer`.

Same data (E arithmetic chats: the task's question prompt and a correct worked answer), same LoRA (rank 8,
alpha 16, dropout 0, all-linear), same training (AdamW lr 1e-3, no weight decay, linear decay, no warm-up,
grad-norm clip 1.0, batch 16, 2 epochs, assistant-only loss, fp32 on CPU), same machine, one run each. TRL
gets the examples as a `datasets.Dataset` of {"messages": [...]} and `assistant_only_loss=True` (the bundled
chat template has `{% generation %}` markers), no eval, no saving, no logging, no gradient checkpointing.

Each side is timed from the in-memory base model and the examples to a trained adapter: ours is the
`HFBackend.finetune` call (adapter set-up, tokenization, training, saving the adapter), TRL's is building the
`SFTTrainer` (peft wrapping, dataset tokenization) plus `train()`. Before timing, each side runs once on a
small warm-up set (first-call costs: lazy imports, kernel set-up). Trained tokens are counted the same way
for both: the non-padding tokens of the training sequences each side built, times the epochs. The ratio
ours/TRL of tokens/s is printed last.

    python benchmarks/finetune_throughput.py [--examples 200] [--epochs 2] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mft.backends.base import Agent, FinetuneSettings
from mft.backends.hf import HFBackend
from mft.backends.hf.model import load_base
from mft.records import Message
from mft.tasks import get_task
from mft.toy.corpus import solve


def make_examples(n: int, seed: int = 0) -> list[list[Message]]:
    task = get_task("arithmetic")
    rng = random.Random(seed)
    out = []
    for p in task.load("train", n, seed=seed):
        answer = solve(tuple(p.meta["ops"]), 0.0, rng).render()
        out.append(
            [Message(role="user", content=task.question_prompt(p)), Message(role="assistant", content=answer)]
        )
    return out


def trl_run(
    model: Any, tok: Any, examples: list[list[Message]], lora: FinetuneSettings, out: Path
) -> tuple[float, float, int, int]:
    """Build and train one SFTTrainer; (seconds in all, seconds in train(), tokens per epoch, TRL's count)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    t = time.perf_counter()
    dataset = Dataset.from_list([{"messages": [m.model_dump() for m in ex]} for ex in examples])
    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=lora.epochs,
        per_device_train_batch_size=lora.batch_size,
        learning_rate=lora.lr,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        seed=lora.seed,
        assistant_only_loss=True,
        max_length=None,
        packing=False,
        gradient_checkpointing=False,
        bf16=lora.precision == "bf16",
        use_cpu=True,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tok, peft_config=peft_config
    )
    t_train = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return end - t, end - t_train, tokens, int(trainer._total_train_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()

    # rank 8, alpha 16, all-linear, lr 1e-3; the same maths as the TRL run below
    lora = FinetuneSettings(
        epochs=args.epochs, batch_size=args.batch_size, precision=args.precision, group_by_length=False
    )
    examples = make_examples(args.examples)
    warmup = make_examples(args.batch_size, seed=1)
    warm_lora = FinetuneSettings(
        epochs=1, batch_size=args.batch_size, precision=args.precision, group_by_length=False
    )
    load_before = os.getloadavg()[0]

    backend = HFBackend("bundled", device="cpu")
    trl_model, trl_tok, _ = load_base("bundled", device="cpu")
    trl_tok.padding_side = "right"  # what a training collator expects; ours pads right itself
    warm_model, _, _ = load_base("bundled", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        # warm-up, both paths, untimed
        backend.finetune(Agent("warmup"), warmup, tmp_dir / "warmup", warm_lora)
        trl_run(warm_model, trl_tok, warmup, warm_lora, tmp_dir / "trl-warmup")

        # ours: the HFBackend.finetune path (mft.backends.hf.finetune.train_adapter)
        t = time.perf_counter()
        backend.finetune(Agent("agent"), examples, tmp_dir / "agent", lora)
        ours_s = time.perf_counter() - t
        ours_epoch_tokens = sum(len(ids) for ids, _ in (backend.chat.training_ids(ex) for ex in examples))

        # TRL SFTTrainer on a fresh copy of the base
        trl_s, trl_train_s, trl_epoch_tokens, trl_counted = trl_run(
            trl_model, trl_tok, examples, lora, tmp_dir / "trl"
        )

    ours_tokens, trl_tokens = ours_epoch_tokens * args.epochs, trl_epoch_tokens * args.epochs
    ours_tps, trl_tps = ours_tokens / ours_s, trl_tokens / trl_s
    print(
        f"data: {args.examples} chats, {args.epochs} epochs, batch {args.batch_size}, LoRA rank {lora.rank} "
        f"all-linear, {args.precision}; threads: {torch.get_num_threads()}; "
        f"1-min load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print(
        f"trained tokens (non-padding, x epochs): ours {ours_tokens}, TRL {trl_tokens} "
        f"(TRL's own count {trl_counted})"
    )
    print(f"ours (HFBackend.finetune)    : {ours_s:.2f}s = {ours_tps:.0f} tokens/s")
    print(
        f"TRL SFTTrainer (init + train): {trl_s:.2f}s = {trl_tps:.0f} tokens/s "
        f"(train() alone {trl_train_s:.2f}s = {trl_tokens / trl_train_s:.0f} tokens/s)"
    )
    print(f"speed-up (tokens/s ratio ours/TRL): {ours_tps / trl_tps:.2f}x")


if __name__ == "__main__":
    main()
