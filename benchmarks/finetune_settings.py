"""Finetuning speed of `HFBackend.finetune` on the bundled model: before and after the length-grouped
batches and the bf16 autocast (FinetuneSettings `group_by_length`, `precision`), one run each, same process.

Data: the kind of examples an iteration trains on, E critic conversations (question, a first answer, the
other agents' answers, a reconsidered answer; from the bundled model's seeded corpus, 300 to 700 tokens)
and E generator chats (question and a worked answer), each agent trained on its own set as `mft run` does
(LoRA rank 8, alpha 16, all-linear, AdamW lr 1e-3, batch 16, 2 epochs). Every configuration trains fresh
adapters on the same examples after one untimed warm-up; tokens/s counts the non-padding tokens x epochs.
Timings on a shared 2-core machine vary by 15% from run to run, so the configurations run `--repeats` times,
interleaved, and the median is used. The speed-up of the defaults over the previous behaviour (fp32, plain
shuffled batches) is printed last; `--attribution` also times each change alone.

    python benchmarks/finetune_settings.py [--examples 300] [--repeats 3] [--attribution]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mft.backends.base import Agent, FinetuneSettings
from mft.backends.hf import HFBackend
from mft.backends.hf.train import autocast_dtype
from mft.records import Message
from mft.toy.corpus import CorpusConfig, sample_conversation


def make_sets(n: int, seed: int = 0) -> dict[str, list[list[Message]]]:
    """`n` critic conversations (a 2-round debate) and `n` generator chats from the corpus."""
    rng = random.Random(seed)
    critic: list[list[Message]] = []
    gen: list[list[Message]] = []
    cfg = CorpusConfig(seed=seed)
    while len(critic) < n or len(gen) < n:
        msgs = sample_conversation(cfg, rng)
        if msgs[0].content.startswith("What is") and len(msgs) == 4 and len(critic) < n:
            critic.append(msgs)
        elif msgs[0].content.startswith("What is") and len(gen) < n:
            gen.append(msgs[:2])
    return {"critic": critic, "generator": gen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300, help="examples per agent set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attribution", action="store_true", help="also time each change alone")
    args = ap.parse_args()
    sets = make_sets(args.examples)
    backend = HFBackend("bundled", device="cpu")
    tokens = {k: 2 * sum(len(backend.chat.training_ids(ex)[0]) for ex in v) for k, v in sets.items()}
    configs = {"before: fp32, plain batches": FinetuneSettings(precision="fp32", group_by_length=False)}
    if args.attribution:
        configs["length-grouped batches only"] = FinetuneSettings(precision="fp32", group_by_length=True)
        configs["bf16 autocast only"] = FinetuneSettings(precision="bf16", group_by_length=False)
    configs["after: defaults (auto, grouped)"] = FinetuneSettings()
    auto = autocast_dtype("auto", torch.device("cpu"))
    print(f"threads {torch.get_num_threads()}; precision auto resolves to {auto or 'fp32'} here")
    runs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = FinetuneSettings(epochs=1)
        backend.finetune(Agent("warmup"), sets["generator"][:32], Path(tmp) / "w", warm)
        for _rep in range(args.repeats):
            for label, settings in configs.items():
                for kind, examples in sets.items():
                    t = time.perf_counter()
                    backend.finetune(Agent(kind), examples, Path(tmp) / kind, settings)
                    runs.setdefault((label, kind), []).append(time.perf_counter() - t)
    seconds: dict[str, float] = {}
    for label in configs:
        seconds[label] = 0.0
        for kind in sets:
            dt = statistics.median(runs[(label, kind)])
            seconds[label] += dt
            spread = ", ".join(f"{x:.1f}" for x in runs[(label, kind)])
            print(
                f"{label:34s} {kind:9s} {tokens[kind]:7d} tokens  median {dt:6.1f}s ({spread})  "
                f"{tokens[kind] / dt:6.0f} tok/s"
            )
    before, after = seconds["before: fp32, plain batches"], seconds["after: defaults (auto, grouped)"]
    print(f"both sets (sum of medians): before {before:.1f}s, after {after:.1f}s")
    print(f"speed-up of the defaults over fp32 + plain batches: {before / after:.2f}x")


if __name__ == "__main__":
    main()
