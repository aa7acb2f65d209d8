"""Same seed, same machine: identical debate records, datasets and results; another seed: other samples."""

from __future__ import annotations

import json
from pathlib import Path

from mft.config import RunConfig
from mft.pipeline.run import run


def _run(tmp_path: Path, name: str, seed: int) -> Path:
    from mft.backends.hf import HFBackend

    cfg = RunConfig(
        name=name,
        runs_dir=tmp_path,
        agents=2,
        summarize=False,  # no summaries: fewer generations (a run's default has them)
        iterations=1,
        n_train=4,
        n_test=2,
        chunk_size=2,
        min_examples=1,
        ft_epochs=1,
        ft_batch_size=4,
        diversity_problems=0,
        seed=seed,
    )
    run(cfg, progress=False, backend=HFBackend("bundled"))  # a fresh backend: nothing carried over
    return cfg.run_dir


def _files(run_dir: Path) -> dict[str, bytes]:
    keep = ("debate.jsonl", ".jsonl", "sizes.json", "results.json", "adapter_model.safetensors")
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name.endswith(keep)
    }


def test_same_seed_same_artifacts_other_seed_other_samples(tmp_path: Path) -> None:
    first, second = _files(_run(tmp_path, "a", 0)), _files(_run(tmp_path, "b", 0))
    assert "iter_1/debate.jsonl" in first and "iter_1/data/gen_0.jsonl" in first
    assert "iter_1/agents/critic_1/adapter_model.safetensors" in first
    assert first == second
    other = _files(_run(tmp_path, "c", 1))

    def responses(files: dict[str, bytes]) -> list[object]:
        return [json.loads(line)["responses"] for line in files["iter_1/debate.jsonl"].splitlines()]

    assert responses(other) != responses(first)
