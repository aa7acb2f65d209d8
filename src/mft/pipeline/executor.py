"""Where the heavy work of an iteration runs: here (`local`) or spread over a Ray cluster (`ray`).

With `executor: ray` in a run config:
- the 2N per-agent finetunes of an iteration run as Ray tasks, one agent per task, each reserving
  `ray_num_cpus` CPUs and `ray_num_gpus` GPUs; each task loads the base model, trains its agent from its own
  previous adapter and saves it (temp dir + rename, as locally), so a killed run resumes the same way;
- debate chunks are sharded over `ray_workers` Ray actors, each holding its own backend; the driver appends
  the records in chunk order, so the files are the same as with the local executor.
Every unit is seeded exactly as locally (per agent, per chunk), so both executors give the same artifacts.
Ray is imported only here and only for `executor: ray` (`pip install 'mft[ray]'`). The debate actors are
started once per process and reused by every stage of a run (`chunk_runner_for`), and stopped before the
finetune tasks need their CPUs/GPUs (`release_runners`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mft.backends.base import Agent, FinetuneSettings
from mft.data.examples import read_training_data
from mft.debate.engine import ChunkRunner, DebateSettings, Society, debate_chunk
from mft.errors import MftError
from mft.objectives import Objective
from mft.pipeline.assemble import backend_options
from mft.records import DebateRecord, Problem
from mft.tasks.base import Task

if TYPE_CHECKING:
    from mft.config import RunConfig


@dataclass
class FinetuneJob:
    name: str
    start_from: str | None
    examples_path: Path
    out_dir: Path
    base: str | None = None  # the agent's base model in a mixed society (None: the run's one model)
    objective: Objective = "sft"  # chat examples (SFT) or preference pairs (DPO)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MftError(
            "executor 'ray' needs Ray", hint="pip install 'mft[ray]', or use executor: local"
        ) from exc
    return ray


def init_ray(address: str | None, num_cpus: int | None = None) -> Any:
    """Connect to a cluster (`address`, e.g. 'auto' or 'ray://host:10001'), or start a local one."""
    ray = _ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            from mft.reaper import start_reaper

            start_reaper()  # a local cluster's processes end with this one, even on a kill (`mft.reaper`)
        ray.init(**kwargs)
    return ray


def _finetune_one(
    trainer: str, model: str, options: dict[str, Any], job: FinetuneJob, settings: FinetuneSettings
) -> str:
    """Body of one Ray finetune task: a fresh `trainer` backend on this worker (on the agent's own base),
    one agent trained and saved."""
    from mft.backends import get_backend

    backend = get_backend(trainer, job.base or model, **options)
    data = read_training_data(job.examples_path, job.objective)
    agent = backend.finetune(
        Agent(job.name, job.start_from), data, job.out_dir, replace(settings, objective=job.objective)
    )
    assert agent.adapter is not None
    return agent.adapter


def ray_finetune(
    backend: str,
    model: str,
    options: dict[str, Any],
    jobs: list[FinetuneJob],
    settings: FinetuneSettings,
    *,
    address: str | None,
    num_cpus: float,
    num_gpus: float,
) -> list[Agent]:
    """Run the finetune jobs of a run on backend `backend` as Ray tasks, each on the backend its class
    names as its `ray_trainer` (built with `options`); returns the trained agents in job order."""
    from mft.backends import backend_class

    trainer = backend_class(backend).ray_trainer
    if trainer is None:
        raise MftError(
            f"the {backend} backend does not finetune its agents in Ray workers", hint="use executor: local"
        )
    ray = init_ray(address)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_finetune_one)
    refs = [remote.remote(trainer, model, options, job, settings) for job in jobs]
    return [Agent(job.name, path, job.base) for job, path in zip(jobs, ray.get(refs), strict=True)]


class _DebateWorker:
    """A Ray actor with its own backend (one per base model of a mixed society); runs whole debate chunks."""

    def __init__(self, backend_name: str, models: list[str], options: dict[str, Any]) -> None:
        from mft.backends.mixed import society_backend

        self.backend = society_backend(backend_name, models, options)

    def run(
        self, task: Task, chunk: list[Problem], society: Society, settings: DebateSettings, k: int
    ) -> list[DebateRecord]:
        for agent in society.all_agents():
            self.backend.add_agent(agent)
        return debate_chunk(self.backend, task, chunk, society, settings, k)


class RayChunkRunner:
    """`run_debate(..., chunk_runner=RayChunkRunner(...))`: chunks spread over `workers` actors."""

    def __init__(
        self,
        backend_name: str,
        models: list[str],
        options: dict[str, Any],
        *,
        workers: int,
        address: str | None,
        num_cpus: float,
        num_gpus: float,
    ) -> None:
        ray = init_ray(address)
        actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_DebateWorker)
        self.ray = ray
        self.actors = [actor.remote(backend_name, models, options) for _ in range(workers)]

    def __call__(
        self, task: Task, todo: list[tuple[int, list[Problem]]], society: Society, settings: DebateSettings
    ) -> Iterator[list[DebateRecord]]:
        refs = [
            self.actors[i % len(self.actors)].run.remote(task, chunk, society, settings, k)
            for i, (k, chunk) in enumerate(todo)
        ]
        for ref in refs:  # in chunk order: the driver appends exactly what the local executor would
            yield self.ray.get(ref)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


_RUNNERS: dict[tuple[Any, ...], RayChunkRunner] = {}


def chunk_runner_for(cfg: RunConfig) -> ChunkRunner | None:
    """Ray actors for debate chunks, started once per process and reused by every stage of the run: the
    runner starts (or finds) them when a debate hands it its chunks, with a backend sized for that debate's
    task (`assemble.backend_options`)."""
    if cfg.executor != "ray":
        return None

    def run(
        task: Task, todo: list[tuple[int, list[Problem]]], society: Society, settings: DebateSettings
    ) -> Iterator[list[DebateRecord]]:
        return _runner(cfg, task)(task, todo, society, settings)

    return run


def _runner(cfg: RunConfig, task: Task) -> RayChunkRunner:
    options = backend_options(cfg, task)
    models = cfg.base_models()
    key = (cfg.backend, *models, json.dumps(options, sort_keys=True), cfg.ray_workers, cfg.ray_address)
    if key not in _RUNNERS:
        _RUNNERS[key] = RayChunkRunner(
            cfg.backend,
            models,
            options,
            workers=cfg.ray_workers,
            address=cfg.ray_address,
            num_cpus=cfg.ray_num_cpus,
            num_gpus=cfg.ray_num_gpus,
        )
    return _RUNNERS[key]


def release_runners() -> None:
    """Stop the debate actors so their CPUs/GPUs are free for the finetune tasks (no deadlock on a full
    cluster); the next debate stage starts new ones."""
    for runner in _RUNNERS.values():
        runner.close()
    _RUNNERS.clear()
