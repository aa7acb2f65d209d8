"""Tokens/s of one debate round on the bundled model: the batched engine vs one `generate` per agent.

Same prompts (round 1 of N agents x P problems), same sampling settings, same machine, one run. The
baseline is the naive loop most debate code uses: for each problem, for each agent, one `generate` call.
The figure is the ratio, printed last.

    python benchmarks/debate_throughput.py [--problems 32] [--agents 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf import HFBackend
from mft.records import Message
from mft.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    args = ap.parse_args()

    task = get_task("arithmetic")
    problems = task.load("test", args.problems)
    backend = HFBackend("bundled", batch_size=256)
    for i in range(args.agents):
        backend.add_agent(Agent(f"agent_{i}"))
    requests = [
        GenerationRequest(f"agent_{i}", [Message(role="user", content=task.question_prompt(p))])
        for p in problems
        for i in range(args.agents)
    ]
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)
    backend.generate(requests[:2], sampling)  # warm-up

    # batched engine: the whole round in one call
    backend.stats.completion_tokens = 0
    t = time.perf_counter()
    backend.generate(requests, sampling)
    batched_s = time.perf_counter() - t
    batched_tokens = backend.stats.completion_tokens

    # baseline: one generate call per agent per problem, plain transformers
    tok, model = backend.tokenizer, backend.base
    loop_tokens = 0
    t = time.perf_counter()
    for r in requests:
        ids = tok.apply_chat_template(
            [m.model_dump() for m in r.messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(
                **ids,
                do_sample=True,
                temperature=1.0,
                top_p=0.9,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        loop_tokens += out.shape[1] - ids["input_ids"].shape[1]
    loop_s = time.perf_counter() - t

    b_tps, l_tps = batched_tokens / batched_s, loop_tokens / loop_s
    print(
        f"sequences: {len(requests)} ({args.problems} problems x {args.agents} agents), threads: "
        f"{torch.get_num_threads()}"
    )
    print(f"batched engine : {batched_tokens} tokens in {batched_s:.2f}s = {b_tps:.0f} tokens/s")
    print(f"per-agent loop : {loop_tokens} tokens in {loop_s:.2f}s = {l_tps:.0f} tokens/s")
    print(f"speed-up (tokens/s ratio): {b_tps / l_tps:.1f}x")


if __name__ == "__main__":
    main()
