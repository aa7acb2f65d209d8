"""The multiagent finetuning loop: iteration 0 evaluates the base society, then each iteration debates the
train split, builds each agent's data, finetunes every agent and evaluates the new society.

The stages are in `pipeline/stages.py`, the run directory's layout in `rundir.py`, and the methods
compared (what is finetuned on what) in `methods.py`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mft.backends.base import Backend
from mft.config import RunConfig
from mft.manifest import record_load_warnings, write_or_check
from mft.methods import RATIONALIZING
from mft.pipeline.assemble import build_backend, build_task, check_objectives
from mft.pipeline.stages import (
    check_max_new_tokens,
    stage_build_data,
    stage_debate,
    stage_diversity,
    stage_eval,
    stage_finetune,
)
from mft.records import Problem, write_json_atomic, write_text_atomic
from mft.rundir import REPRODUCE, RunDir, timing_key
from mft.tasks.base import Task, load_split
from mft.toy import check_split_seed
from mft.tracking import Tracking, check_trackers

R = TypeVar("R")


def open_run(cfg: RunConfig, task: Task) -> tuple[list[Problem], list[Problem]]:
    """Load the run's problems and lock its directory (before any model work), then write or check its
    manifest (the settings and the problems it was made from)."""
    for model in cfg.base_models():
        check_split_seed(model, task.name, cfg.split_seed)
    check_objectives(cfg)
    train = load_split(task, "train", cfg.n_train, cfg.split_seed, "--n-train")
    test = load_split(task, "test", cfg.n_test, cfg.split_seed, "--n-test")
    rd = RunDir(cfg.run_dir)
    rd.lock()  # another process writing this run: refused here, at once
    write_or_check(rd.path, cfg, train, test, task, rationalizing=RATIONALIZING)
    return train, test


# While a stage runs, its seconds so far are written to timings.json this often, so a killed process's time
# is kept (within this much) and a resumed stage adds to it: wall times add up over every process of a run.
TIMINGS_FLUSH_SECONDS = 2.0


@contextlib.contextmanager
def _flushing(path: Path, timings: dict[str, float], key: str, before: float, start: float) -> Iterator[None]:
    """Write `timings` with `key` at `before` + the seconds since `start` every TIMINGS_FLUSH_SECONDS, from
    a thread, until the block ends (its writes are no fault-injection points: their timing is not
    deterministic)."""
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(TIMINGS_FLUSH_SECONDS):
            snapshot = {**timings, key: round(before + time.time() - start, 2)}
            text = json.dumps(snapshot, indent=2, sort_keys=True) + "\n"
            with contextlib.suppress(OSError):  # a full disk is reported by the stage's own writes
                write_text_atomic(path, text, fault_point=False)

    thread = threading.Thread(target=flush, name="mft-timings", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run(
    cfg: RunConfig, progress: bool = True, backend: Backend | None = None, report: bool = False
) -> list[dict[str, Any]]:
    """The whole loop; returns the per-iteration eval results (iteration 0 = the base society). `report`:
    then write the run's report (`mft report`) and send its plots to the trackers."""
    task = build_task(cfg)
    check_trackers(cfg.report_to)  # a tracker's missing package stops here, before any model work
    train, test = open_run(cfg, task)
    if cfg.diversity_problems != 0 and cfg.embedding_model:
        from mft.eval.encoders import check_encoder

        check_encoder(cfg.embedding_model)  # a missing encoder stops here, not after the first eval
    if backend is None:
        backend = build_backend(cfg, task)
    record_load_warnings(cfg.run_dir, backend.load_warnings)
    check_max_new_tokens(backend, cfg.max_new_tokens or task.max_new_tokens)
    timings_path = RunDir(cfg.run_dir).timings
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    with open_tracking(cfg) as tracking:

        def timed(key: str, fn: Callable[..., R], *args: Any) -> R:
            before, t = timings.get(key, 0.0), time.time()
            with _flushing(timings_path, timings, key, before, t):
                out = fn(*args)
            timings[key] = round(before + time.time() - t, 2)
            write_json_atomic(timings_path, timings)
            tracking.log_stage(key, timings[key])  # a finished stage's figures (none sent twice)
            return out

        results = [timed(timing_key(0, "eval"), stage_eval, cfg, 0, backend, task, test, progress)]
        if cfg.diversity_problems != 0:
            timed(timing_key(0, "diversity"), stage_diversity, cfg, 0, backend, task, progress)
        for k in range(1, cfg.iterations + 1):
            timed(timing_key(k, "debate"), stage_debate, cfg, k, backend, task, train, progress)
            timed(timing_key(k, "build_data"), stage_build_data, cfg, k, task)
            curves = tracking.train_curves(k)
            timed(timing_key(k, "finetune"), stage_finetune, cfg, k, backend, task, progress, curves)
            results.append(timed(timing_key(k, "eval"), stage_eval, cfg, k, backend, task, test, progress))
            if cfg.diversity_problems != 0:
                timed(timing_key(k, "diversity"), stage_diversity, cfg, k, backend, task, progress)
        if report:
            from mft.report import write_report

            write_report(cfg.run_dir)
            tracking.log_images(RunDir(cfg.run_dir).plots, cfg.iterations)
    return results


def open_tracking(cfg: RunConfig) -> Tracking:
    """The experiment trackers `cfg.report_to` names, on the run's directory, told the run's settings (a
    reproduce's method runs are grouped under the reproduce directory's name)."""
    group = cfg.runs_dir.name if (cfg.runs_dir / REPRODUCE).exists() else None
    tracking = Tracking.open(cfg.run_dir, cfg.report_to, cfg.name, group)
    tracking.log_params(json.loads(cfg.model_dump_json()))
    return tracking


def track_report(cfg: RunConfig, path: Path) -> None:
    """Send the plots of the report just written in reproduce directory `path` (`path`/plots/*.png) to the
    trackers of `cfg.report_to`, on that directory (grouped with its methods' runs), as images at the last
    iteration. (A run's own report is sent by `run(..., report=True)`.)"""
    with Tracking.open(path, cfg.report_to, path.name, path.name) as tracking:
        tracking.log_images(RunDir(path).plots, cfg.iterations)
