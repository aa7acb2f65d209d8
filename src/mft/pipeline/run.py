"""The multiagent finetuning loop: iteration 0 evaluates the base society, then each iteration debates the
train split, builds each agent's data, finetunes every agent and evaluates the new society.

The stages are in `pipeline/stages.py`, the run directory's layout in `rundir.py`, and the methods
compared (what is finetuned on what) in `methods.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mft.backends.base import Backend
from mft.config import RunConfig, build_backend, build_task
from mft.pipeline.stages import (
    stage_build_data,
    stage_debate,
    stage_diversity,
    stage_eval,
    stage_finetune,
)
from mft.records import Problem, write_json_atomic
from mft.rundir import RunDir, timing_key
from mft.tasks.base import Task

R = TypeVar("R")


def open_run(cfg: RunConfig, task: Task) -> tuple[list[Problem], list[Problem]]:
    """Load the run's problems (before any model work) and write or check its manifest."""
    train = task.load("train", cfg.n_train, seed=cfg.split_seed)
    test = task.load("test", cfg.n_test, seed=cfg.split_seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    RunDir(cfg.run_dir).write_or_check_manifest(cfg, train, test, task)
    return train, test


def run(cfg: RunConfig, progress: bool = True, backend: Backend | None = None) -> list[dict[str, Any]]:
    """The whole loop; returns the per-iteration eval results (iteration 0 = the base society)."""
    task = build_task(cfg)
    train, test = open_run(cfg, task)
    if cfg.diversity_problems and cfg.embedding_model:
        from mft.eval.encoders import check_encoder

        check_encoder(cfg.embedding_model)  # a missing encoder stops here, not after the first eval
    if backend is None:
        backend = build_backend(cfg)
    timings_path = RunDir(cfg.run_dir).timings
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def timed(key: str, fn: Callable[..., R], *args: Any) -> R:
        t = time.time()
        out = fn(*args)
        timings[key] = timings.get(key, 0.0) + round(time.time() - t, 2)
        write_json_atomic(timings_path, timings)
        return out

    results = [timed(timing_key(0, "eval"), stage_eval, cfg, 0, backend, task, test, progress)]
    if cfg.diversity_problems:
        timed(timing_key(0, "diversity"), stage_diversity, cfg, 0, backend, task, progress)
    for k in range(1, cfg.iterations + 1):
        timed(timing_key(k, "debate"), stage_debate, cfg, k, backend, task, train, progress)
        timed(timing_key(k, "build_data"), stage_build_data, cfg, k, task)
        timed(timing_key(k, "finetune"), stage_finetune, cfg, k, backend, progress)
        results.append(timed(timing_key(k, "eval"), stage_eval, cfg, k, backend, task, test, progress))
        if cfg.diversity_problems:
            timed(timing_key(k, "diversity"), stage_diversity, cfg, k, backend, task, progress)
    return results
