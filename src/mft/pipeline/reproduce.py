"""Every method of the paper's comparison, on the same problems, budget and seeds: `mft reproduce`.

    runs/<name>/reproduce.json        task, methods and the run directory of each
    runs/<name>/<method>/             an ordinary run directory (see `rundir.py`)
    runs/<name>/report.md|html, plots/

With `--seeds S1 S2 ...` (`reproduce_seeds`) each seed is such a directory, runs/<name>/seed_<s>/, and
runs/<name>/seeds.json lists them; runs/<name>/report.md then reads every seed and their mean.

Base, Majority and Debate are iteration 0 of the Ours run (the base model's single / majority / debate
readings); every finetuning method runs the same iterations with the same training settings. Ours uses the
summarised debate as in the paper; "Ours (no summary)" is the ablation without it.

Stages whose inputs are identical across methods are computed once and copied: iteration 0's evaluation
(the base society, same seed) and its diversity for every method with the same summary setting and
interaction, and
iteration 1's training debate for the methods that debate the same way. A copy is byte-identical to what
the method would have generated itself (same society, settings and seed; a test checks it), so sharing only
saves time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mft.backends.base import Backend
from mft.config import RunConfig
from mft.errors import MftError
from mft.locks import lock_dir
from mft.manifest import settings_diff
from mft.methods import BY_KEY, DEFAULT_KEYS, METHODS, RATIONALIZING, of_run
from mft.pipeline.assemble import build_backend, build_task
from mft.pipeline.run import open_run, run, track_report
from mft.records import replace_dir_atomic, write_json_atomic, write_text_atomic
from mft.rundir import REPRODUCE, SEEDS, RunDir

KEYS = tuple(m.key for m in METHODS)


def method_configs(base: RunConfig, methods: list[str]) -> dict[str, RunConfig]:
    """One run config per method: the base settings with the method (and summary setting, its own
    temperature where `method_temperatures` gives one, its own interaction where its row has one) swapped
    in."""
    root = base.runs_dir / base.name
    out = {}
    for key in methods:
        method = BY_KEY[key]
        update = {"method": method.run_as, "summarize": method.summarize, "runs_dir": root, "name": key}
        if method.interaction is not None:
            update["interaction"] = method.interaction
        out[key] = base.model_copy(update=update).at_method_temperature(key)
    return out


def _debate_signature(cfg: RunConfig, training: bool) -> tuple[Any, ...]:
    method = of_run(cfg.method, cfg.summarize, cfg.interaction)
    rounds = method.training_rounds(cfg.rounds) if training else cfg.rounds
    fields = cfg.model_dump(exclude={"name", "runs_dir", "method", "executor", "ray_workers", "ray_address"})
    return (rounds, json.dumps(fields, sort_keys=True, default=str))


def _copy_stage(src: Path, dst: Path) -> None:
    """Copy a finished stage directory/file into another run (to a temporary name, then rename)."""
    if dst.exists() or not src.exists():
        return
    if src.is_dir():
        with replace_dir_atomic(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    else:
        write_text_atomic(dst, src.read_bytes(), fault_point=False)


def share_finished_stages(configs: dict[str, RunConfig], key: str) -> None:
    """Give run `key` the finished iteration-0 eval / iteration-1 debate of a run with identical inputs."""
    cfg = configs[key]
    mine = RunDir(cfg.run_dir)
    for other_key, other in configs.items():
        if other_key == key:
            continue
        theirs = RunDir(other.run_dir)
        if _debate_signature(other, False) == _debate_signature(cfg, False) and theirs.results(0).exists():
            _copy_stage(theirs.eval_dir(0), mine.eval_dir(0))
            _copy_stage(theirs.diversity(0), mine.diversity(0))
        # a finished training debate: its build-data stage has started from it
        if _debate_signature(other, True) == _debate_signature(cfg, True) and theirs.sizes(1).exists():
            _copy_stage(theirs.train_debate(1), mine.train_debate(1))


def earlier_methods(base: RunConfig) -> list[str]:
    """Methods already run in this reproduce directory with the same settings (kept in its report when
    another subset is run later, e.g. `--methods star` after the others)."""
    out = []
    for key, cfg in method_configs(base, list(KEYS)).items():
        old = RunDir(cfg.run_dir).manifest_config()
        if old is not None and not settings_diff(old, cfg, rationalizing=RATIONALIZING):
            out.append(key)
    return out


def default_methods(base: RunConfig) -> list[str]:
    """The methods a plain `mft reproduce` runs: the main comparison (`DEFAULT_KEYS`); for a mixed society
    (agents on several base models) those with a model per agent, as one model cannot sit on two bases."""
    if not base.mixed:
        return list(DEFAULT_KEYS)
    return [m for m in DEFAULT_KEYS if BY_KEY[m].slots != "one_model"]


def reproduce(
    base: RunConfig,
    methods: list[str] | None = None,
    progress: bool = True,
    runner: Callable[..., list[dict[str, Any]]] | None = None,
    backend: Backend | None = None,
) -> Path:
    """Run the methods (default: the main comparison, `default_methods`; resumable: finished stages are
    kept) and write the report; returns the directory. `backend`: one already built for `base` (else one
    is built here)."""
    methods = default_methods(base) if methods is None else methods
    unknown = [m for m in methods if m not in BY_KEY]
    if unknown:
        raise MftError(f"unknown method(s) {', '.join(unknown)}", hint=f"choose from {', '.join(KEYS)}")
    shared = [m for m in methods if BY_KEY[m].slots == "one_model"]
    if base.mixed and shared:
        raise MftError(
            f"{', '.join(shared)} finetune(s) one model for every agent, which a mixed society (agents on "
            "several base models) cannot share",
            hint=f"leave them out of --methods (a mixed society runs {', '.join(default_methods(base))})",
        )
    root = base.runs_dir / base.name
    configs = method_configs(base, methods)
    lock_dir(root, "reproduce directory", "--runs-dir / --name")
    listed = methods + [m for m in earlier_methods(base) if m not in methods]
    write_json_atomic(root / REPRODUCE, {"task": base.task, "methods": {k: k for k in listed}})
    task = build_task(base)
    if runner is None:
        backend = backend or build_backend(base, task)
        runner = run
    for key, cfg in configs.items():
        if progress:
            print(f"== {key} ==")
        open_run(cfg, task)  # manifest first: refuse a directory made with other settings before copying
        share_finished_stages(configs, key)
        runner(cfg, progress=progress, backend=backend)
    from mft.report import write_report

    write_report(root)
    track_report(base, root)
    return root


def reproduce_seeds(
    base: RunConfig,
    seeds: list[int],
    methods: list[str] | None = None,
    progress: bool = True,
    runner: Callable[..., list[dict[str, Any]]] | None = None,
) -> Path:
    """`reproduce` once per seed, each into RUNS_DIR/NAME/seed_<s>/ (a reproduce directory of its own, with
    its report), then the report over the seeds at RUNS_DIR/NAME (`mft.report.seeds`). The seed drives the
    debates' sampling, the training order and the LoRA initialisation; the problems (`split_seed`) are the
    same for every seed, and within a seed every method's evaluation samples alike. Resumable: a finished
    seed is read, not run again."""
    if not seeds:
        raise MftError("--seeds needs at least one seed", hint="e.g. --seeds 0 1 2")
    if len(set(seeds)) != len(seeds):
        raise MftError(f"--seeds lists a seed twice: {' '.join(map(str, seeds))}", hint="list each seed once")
    root = base.runs_dir / base.name
    lock_dir(root, "reproduce directory", "--runs-dir / --name")
    earlier = read_seeds(root)
    listed = {**earlier, **{str(s): seed_dir_name(s) for s in seeds}}
    write_json_atomic(root / SEEDS, {"task": base.task, "seeds": listed})
    backend = build_backend(base, build_task(base)) if runner is None else None  # one for every seed
    for s in seeds:
        if progress:
            print(f"=== seed {s} ===")
        cfg = base.model_copy(update={"seed": s, "runs_dir": root, "name": seed_dir_name(s)})
        reproduce(cfg, methods, progress, runner, backend)
    from mft.report import write_report

    write_report(root)
    return root


def seed_dir_name(seed: int) -> str:
    return f"seed_{seed}"


def read_seeds(root: Path) -> dict[str, str]:
    """The seeds an earlier `--seeds` run listed in ROOT/seeds.json (seed -> directory), or none."""
    try:
        listed = json.loads((root / SEEDS).read_text(encoding="utf-8"))["seeds"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}
