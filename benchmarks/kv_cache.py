"""Tokens/s of a debate's rounds: the "filled" KV cache and chunked prefill vs transformers' "static" cache.

Three modes of the hf backend. "static": transformers' static cache, which preallocates `prompt width +
max_new_tokens` positions per batch, writes in place, and whose attention reads all of them every step
(the unused ones masked out). "filled" (`mft.backends.hf.kv_cache`): the same preallocation, attention over
the positions written so far only; prompts prefilled as one batch (`prefill_tokens=0`).
"filled+chunked": the default on a CPU, the filled cache with the prompts prefilled in chunks of about
2048 tokens (5 of the 400-token round-2 prompts), then decoded as one batch. P test problems x N agents
on the bundled model: round 1 is generated once, then round 1 and round 2 (each agent's conversation
plus the other agents' round-1 answers, about 400 tokens) again by the same `HFBackend` in each mode, the
order rotating, `--repeats` times each, same seeds. With `--lora`, the agents are N fresh LoRA adapters
(rank 8, all-linear, small non-zero B; merged per batch on a CPU, the default) instead of base agents.
Prints how many texts came out identical to the static cache's, and the ratios of tokens/s last.

    python benchmarks/kv_cache.py [--problems 86] [--agents 3] [--repeats 2] [--lora]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from adapter_batching import make_adapter
from merged_adapters import debate_rounds, debate_setup, timed_generate

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf import HFBackend

MODES = {"static": ("static", 0), "filled": ("filled", 0), "filled+chunked": ("filled", "auto")}


def timed(
    backend: HFBackend, mode: str, requests: list[GenerationRequest], sampling: Sampling
) -> tuple[int, float, list[str]]:
    backend.cache_implementation, backend.prefill_tokens = MODES[mode]
    return timed_generate(backend, requests, sampling)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora", action="store_true", help="LoRA agents instead of base agents")
    args, task, problems, sampling = debate_setup(ap)
    n = args.agents
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend("bundled", batch_size=256)
        for i in range(n):
            adapter = None
            if args.lora:
                adapter = Path(tmp) / f"lora_{i}"
                make_adapter(adapter, seed=i)
            backend.add_agent(Agent(f"agent_{i}", None if adapter is None else str(adapter)))
        round1, round2 = debate_rounds(backend, task, problems, n, "agent_", sampling)
        kind = "LoRA" if args.lora else "base"
        print(
            f"{args.problems} problems x {n} {kind} agents, max {sampling.max_new_tokens} new tokens, "
            f"threads {torch.get_num_threads()}"
        )
        ratios = {}
        for name, requests in (("round 1", round1), ("round 2", round2)):
            totals: dict[str, list[float]] = {mode: [0, 0.0] for mode in MODES}
            texts: dict[str, list[str]] = {}
            names = list(MODES)
            for r in range(args.repeats):
                for mode in names[r % 3 :] + names[: r % 3]:
                    tokens, seconds, texts[mode] = timed(backend, mode, requests, sampling)
                    totals[mode][0] += tokens
                    totals[mode][1] += seconds
            tps = {mode: tok / sec for mode, (tok, sec) in totals.items()}
            for mode, (tok, sec) in totals.items():
                same = sum(a == b for a, b in zip(texts["static"], texts[mode], strict=True))
                print(
                    f"{name}, {mode:14}: {tok:.0f} tokens in {sec:.2f}s = {tps[mode]:.0f} tokens/s; "
                    f"{same} of {len(requests)} texts identical to static's"
                )
            ratios[name] = {mode: tps[mode] / tps["static"] for mode in ("filled", "filled+chunked")}
    for name, r in ratios.items():
        print(
            f"speed-up over the static cache, {name}: filled {r['filled']:.2f}x, "
            f"filled+chunked prefill {r['filled+chunked']:.2f}x"
        )


if __name__ == "__main__":
    main()
