"""Building blocks of the GPU check (benchmarks/gpu_check.py): the random-weight model and adapters, the
training data, timing and memory readings, the micro-batch from mft's memory estimate, the six finetunes."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARCHITECTURE = HERE / "models" / "llama-3.1-8b.json"
VLLM_ARCHITECTURE = HERE / "models" / "qwen2.5-0.5b.json"
# the bundled model's tokenizer, chat template and generation settings go with the random model
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
AGENTS, ROUNDS, RANK = 3, 2, 8
GIB = 2**30


def say(line: str) -> None:
    print(f"gpu_check: {line}", flush=True)


def size(n: int) -> str:
    """A parameter count for people: 6.98B, 0.15M."""
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def model_config(arch: Path, tiny: bool = False, layers: int | None = None) -> Any:
    """The transformers config of `arch` (its `_tiny` sizes with `tiny`, `layers` layers where given), with
    the bundled tokenizer's vocabulary and special tokens."""
    from transformers import AutoConfig, AutoTokenizer

    from mft.toy import CHECKPOINT_DIR

    raw = json.loads(arch.read_text())
    spec = {k: v for k, v in raw.items() if not k.startswith("_")}
    if tiny:
        spec.update(raw["_tiny"])
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    spec.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if layers is not None:
        spec.update(num_hidden_layers=layers)
        if "max_window_layers" in spec:
            spec["max_window_layers"] = layers
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def build_model(config: Any, out: Path, device: str, dtype: Any) -> tuple[Any, Any, int]:
    """A random-weight model of `config` built on `device` in `dtype`, and its tokenizer; `out` gets the
    config and tokenizer files only (what names the model). Returns (model, tokenizer, parameters)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from mft.toy import CHECKPOINT_DIR

    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(CHECKPOINT_DIR) / name, out / name)
    torch.manual_seed(0)
    with torch.device(device):  # weights made and initialised where they will be used
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    lm.generation_config = GenerationConfig.from_pretrained(out)  # as from_pretrained would read it
    return lm, AutoTokenizer.from_pretrained(out), sum(p.numel() for p in lm.parameters())


def random_adapters(config: Any, out: Path, names: list[str], rank: int = RANK) -> list[str]:
    """LoRA adapters of rank `rank` on every linear layer of `config`'s model, with random non-zero weights
    (peft's nn.Linear-style uniform init of A and B), written to `out/<name>`. The tensor names and shapes
    come from peft on a meta-device copy: no weights are allocated."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(skeleton, lora)
    shapes = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    paths = []
    for i, name in enumerate(names):
        gen = torch.Generator().manual_seed(i)
        tensors = {
            k: (torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(shape[1]) for k, shape in shapes.items()
        }
        path = out / name
        path.mkdir(parents=True)
        save_file(tensors, str(path / "adapter_model.safetensors"))
        peft_model.peft_config["default"].save_pretrained(str(path))
        paths.append(str(path))
    return paths


class Timed:
    """The backend, with each `generate` call (one debate round) timed: (tokens, seconds) per call."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.calls: list[tuple[int, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def generate(self, requests: list[Any], sampling: Any) -> list[str]:
        before, t = self.backend.stats.completion_tokens, time.perf_counter()
        out: list[str] = self.backend.generate(requests, sampling)
        self.calls.append((self.backend.stats.completion_tokens - before, time.perf_counter() - t))
        return out


class Memory:
    """Peak memory per stage: the CUDA allocator's (reset before each stage), or the process's peak RSS."""

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu
        self.kind = "torch.cuda.max_memory_allocated" if gpu else "the process's peak RSS, a CPU run"
        self.stages: dict[str, float] = {}

    def start(self) -> None:
        if self.gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def stop(self, stage: str) -> None:
        import resource

        if self.gpu:
            import torch

            peak = torch.cuda.max_memory_allocated()
        else:  # kilobytes on Linux, and not resettable: the peak so far
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.stages[stage] = round(peak / GIB, 2)


def training_data(records: list[Any], slot: int, task: Any) -> tuple[list[Any], list[Any], int]:
    """(generator examples, critic examples, how many came from mft's builders) of `slot`, one of each per
    debate: the builders' D_G and mixed D_C first, topped up with that agent's own unfiltered turns (a
    random model's debates rarely reach a consensus the builders keep), so the workload is the same in every
    run: as many examples per agent as problems, of the shapes the builders make."""
    from mft.data.builders import critic_split, generator_examples, mask_first_answer, mix_critic

    gen = generator_examples(records, slot, task.is_equivalent)
    crit = mix_critic(critic_split(records, slot, task.is_equivalent), 2 / 3, f"gpu-check:{slot}")
    built = len(gen) + len(crit)
    n = len(records)
    gen = (gen + [list(r.conversations[slot][:2]) for r in records])[:n]
    crit = (crit + [list(r.conversations[slot]) for r in records])[:n]
    return gen, [mask_first_answer(x) for x in crit], built


def memory_plan(model_dir: Path, args: argparse.Namespace, micro: int, checkpointing: bool) -> Any:
    from mft.backends.hf.memory import MemoryPlan

    return MemoryPlan(
        model=str(model_dir),
        agents=AGENTS,
        rounds=ROUNDS,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        lora_rank=RANK,
        ft_batch_size=args.ft_batch_size,
        ft_micro_batch_size=micro,
        gradient_checkpointing=checkpointing,
        gpu=args.gpu,
    )


def micro_batch(model_dir: Path, args: argparse.Namespace) -> tuple[int, bool]:
    """The largest micro-batch (then with activation checkpointing) whose training peak, by mft's estimate,
    is at most 60% of the GPU's memory; the whole batch on a CPU."""
    if not args.gpu:
        return args.ft_batch_size, False
    import torch

    from mft.backends.hf.memory import estimate

    total = torch.cuda.get_device_properties(0).total_memory
    sizes = [m for m in (16, 8, 4, 2, 1) if m <= args.ft_batch_size]
    for checkpointing in (False, True):
        for m in sizes:
            if estimate(memory_plan(model_dir, args, m, checkpointing))["peak while training"] <= 0.6 * total:
                return m, checkpointing
    return 1, True


def finetune_all(
    backend: Any,
    agents: list[Any],
    data: dict[str, list[Any]],
    args: argparse.Namespace,
    out: Path,
    micro: int,
    checkpointing: bool,
) -> dict[str, Any]:
    """The six adapters' finetunes, one after another, each on its own data; a micro-batch that runs out of
    memory is halved and the finetune redone (and said so)."""
    from mft.backends.base import FinetuneSettings

    ooms: list[str] = []
    examples = tokens = 0
    seconds = 0.0
    for agent in agents:
        while True:
            settings = FinetuneSettings(
                rank=RANK,
                epochs=1,
                batch_size=args.ft_batch_size,
                micro_batch_size=micro,
                gradient_checkpointing=checkpointing,
                seed=0,
            )
            steps: list[Any] = []
            t = time.perf_counter()
            try:
                backend.finetune(agent, data[agent.name], out / agent.name, settings, on_step=steps.append)
            except Exception as exc:
                if type(exc).__name__ != "OutOfMemoryError" or micro == 1:
                    raise
            else:
                seconds += time.perf_counter() - t
                examples += len(data[agent.name])
                tokens += steps[-1].tokens if steps else 0
                break
            # out of memory (the error and the tensors its frames held are gone by now): half the rows
            ooms.append(f"{agent.name} at micro-batch {micro}")
            say(f"finetune: {agent.name} ran out of memory at micro-batch {micro}: again at {micro // 2}")
            micro //= 2
            free()
    return {
        "adapters": len(agents),
        "examples": examples,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "examples_per_s": examples / seconds,
        "tokens_per_s": tokens / seconds,
        "micro_batch": micro,
        "gradient_checkpointing": checkpointing,
        "out_of_memory": ooms,
    }


def free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def diversity_encoder() -> tuple[Any, str]:
    """The sentence encoder where it loads offline, and what was done."""
    from mft.errors import MftError
    from mft.eval.encoders import DEFAULT_ENCODER, check_encoder, load_encoder

    try:
        check_encoder(DEFAULT_ENCODER)
        return load_encoder(DEFAULT_ENCODER), f"on ({DEFAULT_ENCODER})"
    except MftError as exc:
        return None, f"off, {exc.message}"
