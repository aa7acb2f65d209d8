"""`executor: ray` on a local Ray cluster (2 CPUs) gives the same artifacts as the local executor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mft.config import RunConfig
from mft.pipeline.run import run


def _artifacts(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("timings.json", "manifest.json", ".lock")
    }


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    small = {
        "name": "small",
        "agents": 2,
        "summarize": False,  # no summaries: fewer generations (a run's default has them)
        "iterations": 1,
        "n_train": 6,
        "n_test": 4,
        "chunk_size": 2,
        "min_examples": 1,
        "ft_epochs": 1,
        "ft_batch_size": 4,
    }
    local = RunConfig(runs_dir=tmp_path / "local", **small)
    run(local, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = RunConfig(runs_dir=tmp_path / "ray", executor="ray", ray_workers=2, **small)
        run(distributed, progress=False)
    finally:
        from mft.pipeline.executor import release_runners

        release_runners()
        ray.shutdown()
    expected = _artifacts(local.run_dir)
    assert "iter_1/agents/critic_1/adapter_model.safetensors" in expected
    assert _artifacts(distributed.run_dir) == expected
