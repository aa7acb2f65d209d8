"""Wall time of one multiagent-finetuning iteration on the bundled model, and its extrapolation to 500/500.

One `mft.pipeline.run.run` with the default `RunConfig` (3 agents, 2 rounds, LoRA rank 8, 2 epochs...) except
smaller sizes (default 60 train / 20 test problems, 1 iteration; `min_examples` scaled by the same factor
as the train problems, so the agents that train at full size also train here) in a temp runs directory, on
the hf backend. The stage breakdown comes from the run's own `timings.json`. `iter_0/eval` (the base society's
reference eval) is run once per run, not per iteration, so it is shown apart. The per-problem rates of
iteration 1's stages give the time of one iteration at the default sizes (500 train / 500 test): debate,
data building and finetuning scale with the train problems, eval with the test problems. That linear
extrapolation is an upper bound for finetuning (per-agent set-up is paid once whatever the data size); for
debate and eval it assumes the per-problem cost does not depend on the chunk size (problems are debated in
chunks of `chunk_size`, 100 by default). The measured iteration total is printed last.

With `--compare`, the same run is done twice in one process, first with the hf backend's previous
generation settings (dynamic KV cache, every agent in peft's mixed-adapter batches, LoRA layers), then with
the current ones ("filled" KV cache, batches per adapter, adapters merged on a CPU), and the ratio of the two
iteration totals is printed last.

With `--executor ray`, the run uses `executor: ray` on a local Ray (debate chunks over `--ray-workers`
actors and the finetunes as tasks, one CPU each, so one torch thread each): on a small machine this trades
the threads of one process for processes.

    python benchmarks/iteration_time.py [--n-train 60] [--n-test 20] [--compare] [--executor ray]
        [--ray-workers 2] [--chunk-size 100] [--kv-cache filled|static|dynamic] [--no-summarize]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from mft.config import RunConfig
from mft.pipeline.run import run


def default(field: str) -> int:
    return RunConfig.model_fields[field].default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--full-train", type=int, default=default("n_train"))
    ap.add_argument("--full-test", type=int, default=default("n_test"))
    ap.add_argument("--compare", action="store_true", help="also time the previous generation settings")
    ap.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="ray: a local Ray with one CPU per debate actor / finetune task (--ray-workers actors)",
    )
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=default("chunk_size"))
    ap.add_argument(
        "--summarize",
        action=argparse.BooleanOptionalAction,
        default=default("summarize"),
        help="debate with summaries (default: a run's default, on; docs/performance.md's figures are "
        "--no-summarize, the default when they were measured)",
    )
    ap.add_argument(
        "--kv-cache",
        choices=["filled", "static", "dynamic"],
        default="filled",
        help="the hf backend's KV cache for the current settings (default: filled, the backend's default)",
    )
    args = ap.parse_args()

    from mft.backends.hf import HFBackend

    totals = {}
    variants = [("previous (dynamic cache, mixed batches)", None, "mixed", "off")] if args.compare else []
    variants.append(
        (
            f"current ({args.kv_cache} cache, per-adapter batches, merged adapters)",
            None if args.kv_cache == "dynamic" else args.kv_cache,
            "auto",
            "auto",
        )
    )
    for label, cache, batching, merge in variants:
        HFBackend.cache_implementation, HFBackend.adapter_batching = cache, batching
        HFBackend.merge_adapters = merge
        print(f"== {label}")
        totals[label] = measure(args)
    if args.compare:
        before, after = totals.values()
        print(
            f"iteration 1 total, previous / current settings: {before:.1f}s / {after:.1f}s "
            f"= {before / after:.2f}x"
        )


def measure(args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        # min_examples scaled with n_train, so the agents that train at the full size also train here
        min_examples = max(1, round(default("min_examples") * args.n_train / args.full_train))
        cfg = RunConfig(
            name="bench",
            runs_dir=Path(tmp),
            n_train=args.n_train,
            n_test=args.n_test,
            iterations=1,
            min_examples=min_examples,
            executor=args.executor,
            ray_workers=args.ray_workers,
            chunk_size=args.chunk_size,
            summarize=args.summarize,
        )
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        results = run(cfg, progress=False)
        run_s = time.perf_counter() - t
        timings = json.loads((cfg.run_dir / "timings.json").read_text())
        sizes = json.loads((cfg.run_dir / "iter_1" / "data" / "sizes.json").read_text())
        skipped = json.loads((cfg.run_dir / "iter_1" / "agents" / "society.json").read_text())["skipped"]
    examples = sum(v["examples"] for v in sizes.values())
    load_after = os.getloadavg()[0]

    print(
        f"config: default RunConfig ({cfg.agents} agents, {cfg.rounds} rounds, LoRA rank {cfg.lora_rank}, "
        f"{cfg.ft_epochs} epochs) with n_train={cfg.n_train}, n_test={cfg.n_test}, iterations=1, "
        f"min_examples={cfg.min_examples}, chunk_size={cfg.chunk_size}, executor={cfg.executor}"
        f"{f' ({cfg.ray_workers} actors)' if cfg.executor == 'ray' else ''}; "
        f"threads: {torch.get_num_threads()}; "
        f"1-min load average {load_before:.1f} before, {load_after:.1f} after"
    )
    per_agent = ", ".join(f"{k} {v['examples']}" for k, v in sizes.items())
    print(f"finetuning data: {examples} examples ({per_agent}); skipped: {sorted(skipped) or 'none'}")
    print(f"eval results: iter 0 {json.dumps(results[0]['accuracy'])}")
    print(f"              iter 1 {json.dumps(results[1]['accuracy'])}")
    print(f"run wall time (incl. model load and iter_0/eval): {run_s:.1f}s")
    print(f"iter_0/eval (reference, once per run): {timings['iter_0/eval']:.2f}s")

    stages = [
        ("debate", "iter_1/debate", cfg.n_train, args.full_train),
        ("build_data", "iter_1/build_data", cfg.n_train, args.full_train),
        ("finetune", "iter_1/finetune", cfg.n_train, args.full_train),
        ("eval", "iter_1/eval", cfg.n_test, args.full_test),
    ]
    print(f"{'stage':12}{'seconds':>10}{'s/problem':>12}{f'at {args.full_train}/{args.full_test}':>14}")
    total = full = 0.0
    for label, key, n, n_full in stages:
        s = timings[key]
        rate = s / n
        total += s
        full += rate * n_full
        print(f"{label:12}{s:>10.2f}{rate:>12.4f}{rate * n_full:>13.1f}s")
    own = sum(timings[key] for _, key, _, _ in stages[:3])
    print(
        f"of which the method's own work (debate, build_data, finetune): {own:.1f}s; "
        f"the per-iteration eval of the test split: {timings['iter_1/eval']:.1f}s"
    )
    print(
        f"extrapolated iteration at {args.full_train} train / {args.full_test} test: {full:.1f}s "
        f"({full / 60:.2f} min)"
    )
    print(f"iteration 1 total at {cfg.n_train} train / {cfg.n_test} test: {total:.1f}s")
    return total


if __name__ == "__main__":
    main()
