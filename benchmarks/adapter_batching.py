"""Tokens/s of a debate round of LoRA agents: batches per adapter vs peft's mixed-adapter batches.

A society of N LoRA agents on the bundled base (fresh peft LoRAs, rank 8, all-linear, with small non-zero B
so they are real weights that leave the model's answers intact) answers round 1 of P problems. The same
`HFBackend` generates the same requests twice per repeat, once with `adapter_batching="per-adapter"` (one
batch per adapter, that adapter active) and once with `"mixed"` (every agent in one batch, peft's
`adapter_names=` routing each row), alternating which goes first. Then the same for N agents that all
run on the bare base inside the same PeftModel (adapters disabled vs `__base__` rows). Same machine, one
process; the figure is the ratio of tokens/s, printed last.

    python benchmarks/adapter_batching.py [--problems 86] [--agents 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf import HFBackend
from mft.backends.hf.model import load_base
from mft.records import Message
from mft.tasks import get_task


def make_adapter(out: Path, seed: int) -> None:
    from peft import LoraConfig, get_peft_model

    base, _, _ = load_base("bundled", device="cpu")
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.002)
    model.save_pretrained(str(out))


def timed(
    backend: HFBackend, mode: str, requests: list[GenerationRequest], sampling: Sampling
) -> tuple[int, float]:
    backend.adapter_batching = mode
    backend.stats.completion_tokens = 0
    t = time.perf_counter()
    backend.generate(requests, sampling)
    return backend.stats.completion_tokens, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=86)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    task = get_task("arithmetic")
    problems = task.load("test", args.problems)
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=160, seed=0)
    backend = HFBackend("bundled", batch_size=256, merge_adapters="off")  # LoRA layers, as measured
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.agents):
            make_adapter(Path(tmp) / f"lora_{i}", seed=i)
            backend.add_agent(Agent(f"lora_{i}", str(Path(tmp) / f"lora_{i}")))
            backend.add_agent(Agent(f"base_{i}"))
        print(
            f"round 1 of {args.problems} problems x {args.agents} agents, threads {torch.get_num_threads()}"
        )
        ratios = {}
        for kind in ("lora", "base"):
            requests = [
                GenerationRequest(f"{kind}_{i}", [Message(role="user", content=task.question_prompt(p))])
                for p in problems
                for i in range(args.agents)
            ]
            backend.generate(requests[:2], sampling)  # warm-up
            totals = {"per-adapter": [0, 0.0], "mixed": [0, 0.0]}
            for r in range(args.repeats):
                for mode in ("per-adapter", "mixed") if r % 2 == 0 else ("mixed", "per-adapter"):
                    tokens, seconds = timed(backend, mode, requests, sampling)
                    totals[mode][0] += tokens
                    totals[mode][1] += seconds
            tps = {mode: tok / sec for mode, (tok, sec) in totals.items()}
            for mode, (tok, sec) in totals.items():
                print(f"{kind} agents, {mode:11}: {tok} tokens in {sec:.2f}s = {tps[mode]:.0f} tokens/s")
            ratios[kind] = tps["per-adapter"] / tps["mixed"]
    print(f"speed-up per-adapter / mixed, base agents: {ratios['base']:.2f}x")
    print(f"speed-up per-adapter / mixed, LoRA agents: {ratios['lora']:.2f}x")


if __name__ == "__main__":
    main()
