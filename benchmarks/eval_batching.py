"""Would evaluating several methods' societies in one batch make the hf engine faster on this machine?

The test debate of one method at P problems puts 3P requests of a round to the engine; several methods'
societies on one base could share a batch (as multi-LoRA serving does), so a batch would hold up to
`batch_size` rows instead of P per adapter. This measures what a larger batch buys on the hf engine: the
same requests (the final round of a finished test debate: each slot's conversation up to its last reply,
base agents, so no adapter changes between settings) generated with at most R rows per batch for several R,
alternating, the fastest of `--repeats` kept. Printed: tokens/s per R and each against R = P.

    python benchmarks/eval_batching.py --debate runs/NAME/iter_0/eval/debate.jsonl [--rows 50 100 150 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf import HFBackend
from mft.eval.likelihood import response_prompt
from mft.records import read_debates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debate", type=Path, required=True, help="a test debate's debate.jsonl")
    ap.add_argument("--rows", type=int, nargs="+", default=[50, 100, 150, 300])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    args = ap.parse_args()

    records = read_debates(args.debate)
    final = records[0].n_rounds - 1
    requests = [
        GenerationRequest("agent", response_prompt(r, s, final)) for r in records for s in range(r.n_agents)
    ]
    backend = HFBackend("bundled", batch_size=max(args.rows))
    backend.add_agent(Agent("agent"))
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)
    backend.generate(requests[:2], sampling)  # warm-up
    best: dict[int, float] = {}
    for _ in range(args.repeats):
        for rows in args.rows:
            backend.batch_size = rows
            backend.stats.completion_tokens = 0
            t = time.perf_counter()
            backend.generate(requests, sampling)
            tps = backend.stats.completion_tokens / (time.perf_counter() - t)
            best[rows] = max(best.get(rows, 0.0), tps)
    threads = torch.get_num_threads()
    print(f"{len(requests)} final-round requests of {len(records)} problems, threads: {threads}")
    ref = best[args.rows[0]]
    for rows in args.rows:
        print(f"at most {rows:4d} rows a batch: {best[rows]:7.0f} tokens/s  ({best[rows] / ref:.2f}x)")


if __name__ == "__main__":
    main()
