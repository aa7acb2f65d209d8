"""Memory of a society of N LoRA agents on one shared base vs the base model alone.

The adapters (rank 8, all-linear, fresh peft LoRAs with non-zero B so they are real weights) are created with
peft and saved to a temp dir by a child process, so that making them does not touch the measured processes.
Then two fresh child processes each load the bundled base with `HFBackend` and run one generate round of
the same P problems x N slots (sampling, max 96 new tokens):

- base: the base model alone, every request on the bare base;
- society: the same base with the N adapters loaded by `HFBackend.add_agent`, request i on agent i.

Each reports the bytes of the parameters and buffers the model holds (sum of tensor nbytes, shared storage
counted once) and the growth of its resident set size (RSS) over the moment before loading, after loading
and after the generate round (psutil, else VmRSS from /proc/self/status), and the growth of its peak RSS
(ru_maxrss). Both ratios society/base are printed, the parameter-bytes ratio last.

The base is the bundled model, or (`--synthetic-base HIDDEN:LAYERS`) a randomly initialised Llama of the
usual proportions (head size 64, MLP width 8/3 x hidden, the bundled tokenizer) built from its config and
saved to the temp dir: the ratio depends on how large the adapters are next to the base, and the bundled
base is far smaller than any real one.

    python benchmarks/society_memory.py [--agents 6] [--problems 32] [--synthetic-base 512:8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no psutil and no /proc/self/status VmRSS") from None


def peak_rss_bytes() -> int:
    """High-water mark of the RSS (ru_maxrss, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def model_bytes(model: Any) -> int:
    """Bytes of all parameters and buffers, each underlying storage counted once."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def make_synthetic_base(out: Path, spec: str) -> None:
    """A random-init Llama (`HIDDEN:LAYERS`) with the bundled tokenizer, saved with save_pretrained."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mft.toy import CHECKPOINT_DIR

    hidden, layers = (int(x) for x in spec.split(":"))
    tok = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=(8 * hidden // 3 + 63) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)


def make_adapters(out: Path, agents: int, rank: int, base_model: str) -> None:
    """N different rank-`rank` all-linear LoRA adapters on the base, saved with save_pretrained."""
    import torch
    from peft import LoraConfig, get_peft_model

    from mft.backends.hf.model import load_base

    for i in range(agents):
        base, _, _ = load_base(base_model, device="cpu")
        torch.manual_seed(i)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        with torch.no_grad():  # peft initialises B = 0 (a no-op adapter); make it a trained-looking one
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, 0.02)
        model.save_pretrained(str(out / f"agent_{i}"))


def measure(mode: str, adapters: Path, agents: int, problems: int, model: str) -> dict[str, int]:
    """One measured process: load the base (and the society), then one generate round."""
    import peft  # noqa: F401 - imported before the baseline so import memory is not counted as model memory
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    from mft.backends.base import Agent, GenerationRequest, Sampling
    from mft.backends.hf import HFBackend
    from mft.records import Message
    from mft.tasks import get_task

    task = get_task("arithmetic")
    probs = task.load("test", problems)
    rss0 = rss_bytes()
    backend = HFBackend(model, batch_size=256, device="cpu")
    names = []
    for i in range(agents):
        name = f"agent_{i}"
        backend.add_agent(Agent(name, str(adapters / name) if mode == "society" else None))
        names.append(name)
    loaded_bytes = model_bytes(backend.model)
    rss_loaded = rss_bytes() - rss0
    requests = [
        GenerationRequest(name, [Message(role="user", content=task.question_prompt(p))])
        for p in probs
        for name in names
    ]
    backend.generate(requests, Sampling(temperature=1.0, top_p=0.9, max_new_tokens=96, seed=0))
    return {
        "model_bytes": loaded_bytes,
        "rss_loaded": rss_loaded,
        "rss_generated": rss_bytes() - rss0,
        "peak_rss": peak_rss_bytes() - rss0,
        "sequences": len(requests),
        "completion_tokens": backend.stats.completion_tokens,
        "base_parameters": sum(p.numel() for p in backend.base.parameters()),
    }


def child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[1]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument(
        "--synthetic-base", metavar="HIDDEN:LAYERS", help="a random-init Llama instead of the bundled base"
    )
    ap.add_argument("--model", default="bundled", help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["make", "base", "society"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child == "make":
        make_adapters(args.dir, args.agents, args.rank, args.model)
        print(json.dumps({"ok": True}))
        return
    if args.child is not None:
        print(json.dumps(measure(args.child, args.dir, args.agents, args.problems, args.model)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        model = "bundled"
        if args.synthetic_base:
            model = str(Path(tmp) / "base")
            make_synthetic_base(Path(model), args.synthetic_base)
        common = ["--agents", str(args.agents), "--problems", str(args.problems), "--rank", str(args.rank)]
        common += ["--model", model]
        child("--child", "make", "--dir", tmp, *common)
        adapter_bytes = sum(f.stat().st_size for f in Path(tmp).rglob("adapter_model.safetensors"))
        base = child("--child", "base", "--dir", tmp, *common)
        soc = child("--child", "society", "--dir", tmp, *common)

    print(
        f"society: {args.agents} LoRA adapters (rank {args.rank}, all-linear) on "
        f"{'a synthetic ' + args.synthetic_base if args.synthetic_base else 'the bundled'} base of "
        f"{base['base_parameters'] / 1e6:.2f}M parameters, "
        f"{adapter_bytes / args.agents / 1024:.1f} KiB per adapter file; generate round: "
        f"{base['sequences']} sequences ({args.problems} problems x {args.agents} slots), max 96 new tokens"
    )
    print(f"{'':28}{'base alone':>14}{'society':>14}{'ratio':>8}")
    rows = [
        ("params+buffers bytes", "model_bytes"),
        ("RSS growth after loading", "rss_loaded"),
        ("RSS growth after generate", "rss_generated"),
        ("peak RSS growth", "peak_rss"),
    ]
    for label, key in rows:
        print(f"{label:28}{mib(base[key]):>14}{mib(soc[key]):>14}{soc[key] / base[key]:>7.2f}x")
    print(
        f"RSS growth ratio after generate (society/base): {soc['rss_generated'] / base['rss_generated']:.2f}x"
    )
    print(f"parameter-bytes ratio (society/base): {soc['model_bytes'] / base['model_bytes']:.3f}x")


if __name__ == "__main__":
    main()
