"""The GPU check: mft's own iteration on a model of a real size, in one short run with no downloads.

Needs torch, transformers, peft and accelerate, plus pydantic for mft itself (benchmarks/gpu_check.sh puts
wheels found in benchmarks/wheels/ on the path); not vllm, trl, datasets or math-verify. Step by step:

1. A random-weight model of Llama-3.1-8B's architecture (benchmarks/models/llama-3.1-8b.json; the bundled
   tokenizer's vocabulary) is built in bfloat16 directly on the GPU: no weights are written or read, only
   its config.json and tokenizer files, which name it. mft's HFBackend takes the built model (`preloaded`).
2. 6 random LoRA adapters (r=8 on every linear layer) are written and loaded as agents: 3 generators
   (round 1) and 3 critics (round 2).
3. mft's debate engine runs 3 agents x 2 rounds on N synthetic arithmetic problems (train split), every
   agent's requests of a round in one `generate` call, after an untimed warm-up: generated tokens/s.
4. The diversity pass of mft's diversity stage on that debate (`compute_diversity`: held-out NLL, critics'
   KL, KL from the base; embedding dissimilarity only where its encoder loads offline): its seconds.
5. The six adapters are finetuned one after another (each continuing from its own adapter, 1 epoch) on
   data from the debate: one example per debate and agent, mft's builders' first (D_G, the mixed D_C),
   topped up with the agent's own unfiltered turns (a random model's debates rarely reach a consensus the
   builders keep), so every run trains on the same shapes and counts. Micro-batches are sized by mft's
   memory estimate (halved on an out-of-memory error, which is reported): examples/s. Training all six at
   once is reported as not built (mft has no multi-LoRA trainer).
6. Peak memory (torch.cuda.max_memory_allocated per stage; a CPU run reports the process's peak RSS) beside
   mft's own estimate (`mft.backends.hf.memory.estimate`) for the same settings; total wall time.
7. Only where vllm is importable: benchmarks/vllm_vs_hf.py on a random 0.5B model (qwen2.5-0.5b.json).
   Only where pytest and vllm are importable (every test there needs vllm): tests/gpu.

Without a CUDA device it says so and exits 0. `--allow-cpu --tiny` runs the same steps on a CPU with a
2-layer Llama of hidden size 64 (float32), a check of this script (tests/unit/test_gpu_check.py).

    bash benchmarks/gpu_check.sh [--problems 64] [--max-new-tokens 128] [--json gpu_check.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_check_parts import (
    AGENTS,
    ARCHITECTURE,
    GIB,
    HERE,
    RANK,
    ROOT,
    ROUNDS,
    VLLM_ARCHITECTURE,
    Memory,
    Timed,
    build_model,
    diversity_encoder,
    finetune_all,
    free,
    memory_plan,
    micro_batch,
    model_config,
    random_adapters,
    say,
    size,
    training_data,
)

BUDGET_S = 480  # the check's own budget on one H100
# what the check imports: the model libraries, and what mft itself needs beyond them (its records)
REQUIRED = ("torch", "transformers", "peft", "accelerate", "safetensors", "pydantic")
NAMES = [f"generator_{i}" for i in range(AGENTS)] + [f"critic_{i}" for i in range(AGENTS)]


def load(args: argparse.Namespace, scratch: Path, out: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    """Steps 1-2: the model built where it runs, mft's backend on it, the six adapters loaded as agents.
    Returns (backend, config, agents)."""
    import torch

    from mft.backends.base import Agent
    from mft.backends.hf import HFBackend

    device, dtype = ("cuda", torch.bfloat16) if args.gpu else ("cpu", torch.float32)
    t = time.perf_counter()
    config = model_config(ARCHITECTURE, tiny=args.tiny)
    lm, tokenizer, n_params = build_model(config, scratch / "model", device, dtype)
    backend = HFBackend(str(scratch / "model"), batch_size=args.batch_size, preloaded=(lm, tokenizer))
    model = out["model"] = {
        "architecture": ARCHITECTURE.stem + (" (tiny)" if args.tiny else ""),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "parameters": n_params,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "build_seconds": round(time.perf_counter() - t, 2),
    }
    say(
        f"model: random-weight {model['architecture']}, {config.num_hidden_layers} layers, hidden size "
        f"{config.hidden_size}, {size(n_params)} parameters, {model['dtype']}, built on {device} in "
        f"{model['build_seconds']:.1f} s"
    )
    t = time.perf_counter()
    paths = random_adapters(config, scratch / "adapters", NAMES)
    agents = [Agent(n, p) for n, p in zip(NAMES, paths, strict=True)]
    for agent in agents:
        backend.add_agent(agent)
    out["adapters_seconds"] = round(time.perf_counter() - t, 2)
    say(
        f"agents: {len(agents)} random LoRA adapters (r={RANK}, every linear layer: {AGENTS} generators, "
        f"{AGENTS} critics) written and loaded in {out['adapters_seconds']:.1f} s"
    )
    return backend, config, agents


def debate(backend: Any, agents: list[Any], task: Any, args: argparse.Namespace, memory: Memory) -> Any:
    """Step 3: the debate through mft's engine, after an untimed one on 2 other problems; its records and
    figures."""
    from mft.backends.base import Sampling
    from mft.debate.engine import DebateSettings, Society, run_debate

    problems = task.load("train", args.problems + 2)
    society = Society(generators=agents[:AGENTS], critics=agents[AGENTS:])

    def settings(max_new: int, n: int) -> DebateSettings:
        sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=max_new)
        return DebateSettings(rounds=ROUNDS, sampling=sampling, seed=0, chunk_size=n)

    run_debate(backend, task, problems[args.problems :], society, settings(4, 2), progress=False)
    timed = Timed(backend)
    memory.start()
    chosen = settings(args.max_new_tokens, args.problems)
    records = run_debate(timed, task, problems[: args.problems], society, chosen, progress=False)
    memory.stop("debate")
    tokens, seconds = sum(c[0] for c in timed.calls), sum(c[1] for c in timed.calls)
    per_round = ", ".join(f"round {r}: {k / s:,.0f}" for r, (k, s) in enumerate(timed.calls, start=1))
    say(
        f"debate: {AGENTS} agents x {ROUNDS} rounds x {len(records)} problems, {tokens:,} tokens in "
        f"{seconds:.1f} s = {tokens / seconds:,.0f} generated tokens/s ({per_round})"
    )
    figures = {
        "problems": len(records),
        "agents": AGENTS,
        "rounds": ROUNDS,
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": tokens / seconds,
        "rounds_tokens_per_s": [k / s for k, s in timed.calls],
    }
    return records, figures


def diversity(backend: Any, records: list[Any], task: Any, memory: Memory) -> dict[str, Any]:
    """Step 4: the diversity stage's metrics on the debate, scored as that stage scores them."""
    from mft.backends.base import Agent
    from mft.eval.diversity import compute_diversity

    encoder, embedding = diversity_encoder()
    backend.add_agent(Agent("base_model"))  # the reference of KL from the base, as the stage adds it
    memory.start()
    t = time.perf_counter()
    result = compute_diversity(records, task, backend, encoder, base="base_model", progress=False)
    seconds = time.perf_counter() - t
    memory.stop("diversity")
    metrics = sorted(k for k in result if k not in ("version", "problems", "of", "round"))
    say(
        f"diversity: {', '.join(metrics)} on {len(records)} debates in {seconds:.1f} s (embedding "
        f"dissimilarity: {embedding})"
    )
    return {
        "seconds": round(seconds, 2),
        "problems": len(records),
        "metrics": metrics,
        "embedding": embedding,
    }


def finetune(
    backend: Any,
    agents: list[Any],
    records: list[Any],
    task: Any,
    args: argparse.Namespace,
    scratch: Path,
    memory: Memory,
) -> dict[str, Any]:
    """Step 5: the six adapters trained one after another on data from the debate."""
    data: dict[str, list[Any]] = {}
    built = 0
    for slot in range(AGENTS):
        gen, crit, n = training_data(records, slot, task)
        data[NAMES[slot]], data[NAMES[AGENTS + slot]] = gen, crit
        built += n
    micro, checkpointing = micro_batch(scratch / "model", args)
    free()
    memory.start()
    ft = finetune_all(backend, agents, data, args, scratch / "trained", micro, checkpointing)
    memory.stop("finetune")
    ft["from_builders"] = built
    say(
        f"finetune: {ft['adapters']} adapters one after another ({AGENTS} generators + {AGENTS} critics), "
        f"{ft['examples']} examples ({built} from mft's builders) in {ft['seconds']:.1f} s = "
        f"{ft['examples_per_s']:.2f} examples/s, {ft['tokens_per_s']:,.0f} tokens/s (micro-batch "
        f"{ft['micro_batch']}{', activation checkpointing' if checkpointing else ''})"
    )
    say("finetune, all six at once: not built (mft has no multi-LoRA trainer yet)")
    return ft


def memory_figures(
    memory: Memory, args: argparse.Namespace, scratch: Path, ft: dict[str, Any]
) -> dict[str, Any]:
    """Step 6: the peaks measured beside mft's estimate of the same settings."""
    from mft.backends.hf.memory import estimate

    plan = memory_plan(scratch / "model", args, ft["micro_batch"], ft["gradient_checkpointing"])
    est = estimate(plan)
    keys = ("peak while generating", "peak while training", "peak")
    figures = {
        "measured": memory.kind,
        "peak_gib": max(memory.stages.values()),
        "stages_gib": memory.stages,
        "estimate_gib": {k: round(est[k] / GIB, 2) for k in keys},
    }
    e = figures["estimate_gib"]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in memory.stages.items())
    say(
        f"peak memory ({memory.kind}): {figures['peak_gib']:.2f} GiB ({stages}); mft's estimate: "
        f"{e['peak']:.2f} GiB (generating {e['peak while generating']:.2f}, training "
        f"{e['peak while training']:.2f})"
    )
    return figures


def run_check(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Steps 1-6 (module docstring), each printed as it finishes; their figures."""
    from mft.tasks import get_task

    out: dict[str, Any] = {}
    memory = Memory(args.gpu)
    task = get_task("arithmetic")
    backend, _, agents = load(args, scratch, out)
    records, out["debate"] = debate(backend, agents, task, args, memory)
    out["diversity"] = diversity(backend, records, task, memory)
    out["finetune"] = finetune(backend, agents, records, task, args, scratch, memory)
    out["finetune_all_at_once"] = "not built"
    out["memory"] = memory_figures(memory, args, scratch, out["finetune"])
    del backend
    free()
    return out


def vllm_comparison(args: argparse.Namespace, scratch: Path) -> dict[str, Any] | str:
    """Step 7: vLLM vs hf tokens/s (benchmarks/vllm_vs_hf.py) on a random 0.5B model, where vllm is here."""
    if importlib.util.find_spec("vllm") is None:
        say("vllm vs hf: skipped: vllm not installed")
        return "skipped: vllm not installed"
    import torch

    config = model_config(VLLM_ARCHITECTURE, layers=None if args.gpu else 2)
    model_dir = scratch / "vllm-model"
    lm, _, _ = build_model(config, model_dir, "cuda" if args.gpu else "cpu", torch.bfloat16)
    lm.save_pretrained(model_dir)
    del lm
    free()
    cmd = [
        sys.executable,
        str(HERE / "vllm_vs_hf.py"),
        "--model",
        str(model_dir),
        "--random-adapters",
        "--problems",
        str(args.problems),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--json",
        str(scratch / "vllm.json"),
    ]
    subprocess.run(cmd, check=True)
    figures: dict[str, Any] = json.loads((scratch / "vllm.json").read_text())
    return figures


def gpu_tests(args: argparse.Namespace, scratch: Path) -> dict[str, Any] | str:
    """tests/gpu, with its outcome per test, where it can run: a GPU, pytest and vllm (every test there
    needs vllm)."""
    missing = [m for m in ("pytest", "vllm") if importlib.util.find_spec(m) is None]
    why = "no CUDA device" if not args.gpu else f"{' and '.join(missing)} not installed" if missing else ""
    if why:
        say(f"tests/gpu: skipped: {why}")
        return f"skipped: {why}"
    import xml.etree.ElementTree as ET

    report = scratch / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/gpu"]
    proc = subprocess.run([*cmd, f"--junitxml={report}"], cwd=ROOT)
    outcomes: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            outcomes[f"{case.get('classname')}::{case.get('name')}"] = kind
    return {"returncode": proc.returncode, "tests": outcomes}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("torch", "transformers", "peft", "accelerate"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, help="problems debated by 3 agents x 2 rounds (64; --tiny: 4)")
    ap.add_argument("--max-new-tokens", type=int, help="per response (128; --tiny: 16)")
    ap.add_argument("--batch-size", type=int, default=256, help="generation rows per batch (hf backend)")
    ap.add_argument("--ft-batch-size", type=int, default=16, help="examples per optimizer step")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument(
        "--tiny", action="store_true", help="a 2-layer model of hidden size 64 (same architecture)"
    )
    ap.add_argument(
        "--allow-cpu", action="store_true", help="run on a CPU (with --tiny): a check of the script"
    )
    args = ap.parse_args(argv)
    args.problems = args.problems or (4 if args.tiny else 64)
    args.max_new_tokens = args.max_new_tokens or (16 if args.tiny else 128)

    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    hint = "install them, or put their wheels in benchmarks/wheels/ (see benchmarks/gpu_check.sh)"
    if "torch" in missing:
        say(f"not importable here: {', '.join(missing)}: {hint}")
        return 2
    import torch

    args.gpu = torch.cuda.is_available()
    if not args.gpu and not args.allow_cpu:
        say("no CUDA device is visible (torch.cuda.is_available() is False): skipped, nothing measured")
        return 0
    if not args.gpu and not args.tiny:
        say("on a CPU only the tiny model runs: add --tiny")
        return 2
    if missing:
        say(f"not importable here: {', '.join(missing)}: {hint}")
        return 2
    start = time.perf_counter()
    results: dict[str, Any] = {"device": torch.cuda.get_device_name() if args.gpu else "CPU", **versions()}
    say(f"{results['device']}, " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        results.update(run_check(args, scratch))
        results["vllm_vs_hf"] = vllm_comparison(args, scratch)
        results["gpu_tests"] = gpu_tests(args, scratch)
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    over = "" if results["total_seconds"] <= BUDGET_S or not args.gpu else f", over the {BUDGET_S} s budget"
    say(f"total wall time: {results['total_seconds']:.1f} s{over}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    tests = results["gpu_tests"]
    return 1 if isinstance(tests, dict) and tests["returncode"] not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
