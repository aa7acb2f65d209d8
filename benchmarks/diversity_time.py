"""Seconds of the diversity computation: the previous way (each metric scored on its own, 8 responses a call)
against the planned one (each (model, response) pair scored once, batched by tokens), on the same records.

A seeded 1-iteration `mft run` on the bundled model (default 60 train / 60 test problems, 3 agents, 2
rounds with summaries, every agent finetuned: `min_examples` 1, no diversity stage of its own) gives the
society of iteration 1 (6 LoRA agents that differ from the base) and its test debates; `--run-dir` reuses
such a run instead. Then, in this one process, on one `HFBackend` holding those agents and the base:

- previous: `compute_diversity(..., reference=True, chunk_size=8)` (`mft.eval.likelihood_reference`: the
  held-out pass, then the KL-from-base pass, 8 responses a call) through the hf scorer as it was before
  (`LegacyScorer` below, copied from it: every row routed through peft's mixed-adapter forward, the model
  switched to eval and back on every call);
- the same computation through the current scorer (one adapter a call, merged on a CPU, token-sized
  batches): how much of the gain is the scorer's;
- planned: `compute_diversity(...)` as `mft run` calls it.

Each includes the embedding dissimilarity (the encoder loaded once beforehand, where installed; its own
time is printed too). The values
must agree (rel 1e-4, abs 1e-6: float rounding of differently padded batches); the script fails if not.
With `--repeats N` each is timed N times, in alternating order, and the fastest of each is compared (a
shared machine slows some runs). The ratio previous / planned is printed last.

    python benchmarks/diversity_time.py [--n-test 60] [--n-train 60] [--run-dir RUN | --keep DIR]
        [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mft.backends.base import Agent
from mft.backends.hf import HFBackend
from mft.backends.hf.model import BASE_ADAPTER, accepts_logits_to_keep, left_pad
from mft.config import RunConfig
from mft.eval.diversity import compute_diversity, embedding_dissimilarity
from mft.pipeline.run import run
from mft.pipeline.stages import BASE_SCORER, society_after
from mft.records import Message, read_debates
from mft.rundir import RunDir
from mft.tasks import get_task


class LegacyScorer:
    """The hf backend's scorer before token-sized, per-adapter batches (kept here to time against)."""

    def __init__(self, backend: HFBackend) -> None:
        self.backend = backend

    def score_responses(
        self, agent: str, prompts: list[list[Message]], responses: list[str]
    ) -> list[tuple[Any, Any]]:
        b = self.backend
        loaded, adapter, full_model = b.loaded, b.adapter_of(agent), b.full_models.get(agent)
        model = loaded.model if full_model is None else full_model
        core = loaded.base if full_model is None else full_model
        seqs = [loaded.chat.reply_ids(p, r) for p, r in zip(prompts, responses, strict=True)]
        keep_arg = accepts_logits_to_keep(core)
        pad = loaded.tokenizer.pad_token_id
        out: list[tuple[Any, Any]] = [None] * len(seqs)  # type: ignore[list-item]
        order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
        was_training = model.training
        model.eval()
        try:
            for lo in range(0, len(order), b.batch_size):
                idx = order[lo : lo + b.batch_size]
                width = max(len(seqs[i][0]) for i in idx)
                ids, mask = left_pad([seqs[i][0] for i in idx], pad)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                t_max = max(seqs[i][1] for i in idx)
                kwargs: dict[str, Any] = {
                    "input_ids": ids.to(loaded.device),
                    "attention_mask": mask.to(loaded.device),
                    "position_ids": positions.to(loaded.device),
                    "use_cache": False,
                }
                if keep_arg:
                    kwargs["logits_to_keep"] = t_max + 1
                if full_model is None and loaded.has_adapters:
                    kwargs["adapter_names"] = [adapter] * len(idx)
                with torch.no_grad():
                    logits = model(**kwargs).logits[:, -(t_max + 1) :]
                    for row, i in enumerate(idx):
                        t = seqs[i][1]
                        lp = torch.log_softmax(logits[row, t_max - t : t_max].float(), dim=-1)
                        out[i] = (ids[row, width - t :].to(lp.device), lp)
                del logits
        finally:
            model.train(was_training)
        return out


class Counted:
    """A scorer that counts the (model, response) scorings it is asked for."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.scorings = scorer, 0

    def score_responses(
        self, agent: str, prompts: list[list[Message]], responses: list[str]
    ) -> list[tuple[Any, Any]]:
        self.scorings += len(responses)
        out: list[tuple[Any, Any]] = self.scorer.score_responses(agent, prompts, responses)
        return out


def differences(a: Any, b: Any, where: str = "", rel: float = 1e-4, abs_: float = 1e-6) -> list[str]:
    """Where two diversity dicts differ beyond float tolerance (numbers) or at all (anything else)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}", rel, abs_)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} != {len(b)} entries"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}[{i}]", rel, abs_)]
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=rel, abs_tol=abs_) else [f"{where}: {a!r} != {b!r}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def make_run(root: Path, n_train: int, n_test: int) -> RunConfig:
    cfg = RunConfig(
        name="diversity-bench",
        runs_dir=root,
        n_train=n_train,
        n_test=n_test,
        iterations=1,
        min_examples=1,  # every agent trains: all six differ from the base
        diversity_problems=0,  # measured here, not in the run
        seed=0,
    )
    t = time.perf_counter()
    run(cfg, progress=False)
    print(f"1-iteration run ({n_train} train / {n_test} test problems): {time.perf_counter() - t:.1f}s")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--n-test", type=int, default=60)
    ap.add_argument("--run-dir", type=Path, help="a finished 1-iteration run to reuse (its manifest)")
    ap.add_argument("--keep", type=Path, help="make the run in this directory and keep it")
    ap.add_argument("--repeats", type=int, default=1, help="time each way this often, alternating the order")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.run_dir is not None:
            config = json.loads((args.run_dir / "manifest.json").read_text())["config"]
            cfg = RunConfig(**{**config, "runs_dir": args.run_dir.parent, "name": args.run_dir.name})
        else:
            cfg = make_run(args.keep or Path(tmp), args.n_train, args.n_test)
        measure(cfg, args.repeats)


def measure(cfg: RunConfig, repeats: int) -> None:
    task = get_task(cfg.task)
    records = read_debates(RunDir(cfg.run_dir).eval_debate(1))
    backend = HFBackend(cfg.model)
    society = society_after(cfg, 1)
    agents = [*society.generators, *(society.critics or [])]
    for agent in [*agents, Agent(BASE_SCORER)]:
        backend.add_agent(agent)
    assert all(backend.adapter_of(a.name) != BASE_ADAPTER for a in agents), "every agent has its adapter"
    encoder = None
    try:
        from mft.eval.encoders import load_encoder

        encoder = load_encoder(cfg.embedding_model or "all-MiniLM-L6-v2")
    except Exception as exc:  # noqa: BLE001 - timed without it, and said so
        print(f"no sentence encoder ({exc}): timed without embedding dissimilarity")
    options: dict[str, Any] = {"encoder": encoder, "base": BASE_SCORER, "progress": False}
    legacy = LegacyScorer(backend)
    # warm up: the first forwards of a process allocate; not what is compared
    compute_diversity(records[:2], task, scorer=legacy, reference=True, **options)
    compute_diversity(records[:2], task, scorer=backend, **options)

    print(
        f"records: {len(records)} test problems, {records[0].n_agents} agents, {records[0].n_rounds} rounds; "
        f"threads: {torch.get_num_threads()}; 1-min load average {os.getloadavg()[0]:.1f}"
    )
    timings: dict[str, list[float]] = {}
    results: dict[str, dict[str, Any]] = {}
    runs = [
        ("previous (reference, chunks of 8, previous scorer)", legacy, True),
        ("reference, chunks of 8, current scorer", backend, True),
        ("planned (each pair once, token-sized batches)", backend, False),
    ]
    embedding: list[float] = []
    for repeat in range(repeats):
        # alternate the order, so a slower stretch of a shared machine does not fall on one side only
        for label, scorer, reference in runs if repeat % 2 == 0 else runs[::-1]:
            counted = Counted(scorer)
            t = time.perf_counter()
            extra = {"chunk_size": 8} if reference else {}
            results[label] = compute_diversity(
                records, task, scorer=counted, reference=reference, **extra, **options
            )
            timings.setdefault(label, []).append(time.perf_counter() - t)
            print(f"{label}: {timings[label][-1]:.2f}s ({counted.scorings} (model, response) scorings)")
        if encoder is not None:
            t = time.perf_counter()
            embedding_dissimilarity(records, encoder)
            embedding.append(time.perf_counter() - t)
            print(f"of each, embedding dissimilarity (the same computation): {embedding[-1]:.2f}s")
    first, *others = results.values()
    for label, other in zip(list(results)[1:], others, strict=True):
        diffs = differences(first, other)
        if diffs:
            raise SystemExit(f"values differ ({label}):\n" + "\n".join(diffs[:20]))
    print("values: every metric agrees (rel 1e-4, abs 1e-6)")
    if repeats > 1:
        print("fastest of each: " + "; ".join(f"{k} {min(v):.2f}s" for k, v in timings.items()))
        if embedding:
            print(f"fastest embedding dissimilarity: {min(embedding):.2f}s")
    before, after = min(timings[runs[0][0]]), min(timings[runs[-1][0]])
    which = "previous / planned" + (" (fastest of each)" if repeats > 1 else "")
    print(f"diversity computation, {which}: {before:.2f}s / {after:.2f}s = {before / after:.2f}x")


if __name__ == "__main__":
    main()
