"""Zero-shot transfer: a society finetuned on one task, evaluated on another task.

    mft eval --society RUN --task T [--iteration K] [--n-test N] [--data FILE] [--out DIR]


    RUN/transfer/<task>/manifest.json                the evaluation's settings and problems (as a run's)
    RUN/transfer/<task>/transfer.json                which run the societies came from, trained on which task
    RUN/transfer/<task>/iter_<k>/agents/society.json the run's iteration-k society (its adapters, by path)
    RUN/transfer/<task>/iter_<k>/eval/               debate.jsonl + results.json, as `mft eval` writes them

The society's run directory is only read: everything is written under its `transfer/` sub-directory (or
`--out`), which is an ordinary run directory for `mft report`. The evaluation is the run's own eval stage
(`stages.stage_eval`) with the run's society, debate harness and sampling; only the task and its data (and
how many test problems, the response budget, how it is batched) change. Iteration 0 is the base society
on that task: the reference the finetuned societies are read against.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mft.backends.base import Backend
from mft.config import RunConfig
from mft.errors import MftError
from mft.manifest import write_or_check
from mft.methods import RATIONALIZING
from mft.pipeline.assemble import build_backend, build_task
from mft.records import write_json_atomic
from mft.rundir import TRANSFER, RunDir
from mft.tasks.base import load_split

TRANSFER_FILE = "transfer.json"
# What makes the society and its debate: a transfer evaluates the run's own, so these must be the run's.
MUST_MATCH = (
    "model",
    "agents",
    "summarizer_model",
    "rounds",
    "summarize",
    "interaction",
    "method",
    "temperature",
    "top_p",
    "chat_template_kwargs",
)
# What a transfer may set (the rest -- training settings, names -- is the run's and plays no part here).
TAKEN = (
    "task", "data", "task_options", "n_test", "split_seed", "max_new_tokens", "batch_size", "chunk_size",
    "backend", "backend_options", "seed", "executor", "ray_address", "ray_workers", "ray_num_cpus",
    "ray_num_gpus",
)  # fmt: skip


def transfer_config(run: RunConfig, given: dict[str, Any], out: Path) -> RunConfig:
    """The evaluation's config: the society run's, with the settings in `given` that a transfer may set,
    written to `out`. A setting of MUST_MATCH that differs from the run's is refused (one line naming it)."""
    for name in MUST_MATCH:
        if name in given and given[name] != getattr(run, name):
            flag = "--" + name.replace("_", "-")
            raise MftError(
                f"{flag} {given[name]!r} differs from the society's {name} {getattr(run, name)!r} "
                f"({run.run_dir}/manifest.json)",
                hint=f"leave {flag} out: a transfer evaluates the society as its run made it",
            )
    if "task" not in given:
        raise MftError("--society needs --task (the task to evaluate the society on)")
    update = {k: v for k, v in given.items() if k in TAKEN}
    data = json.loads(run.model_dump_json())
    if update.get("task", run.task) != run.task:  # another task: the run's task settings are not its
        data.pop("data", None)
        data.pop("task_options", None)
        data.pop("max_new_tokens", None)
    data.update(update)
    data.update(runs_dir=str(out.parent), name=out.name)
    cfg = RunConfig.model_validate(data)
    if (cfg.task, cfg.data, cfg.task_options) == (run.task, run.data, run.task_options):
        raise MftError(
            f"--task {cfg.task} with this data is the task {run.run_dir} was trained on: not a transfer",
            hint="evaluate it there with `mft eval --iteration K --config ...`, or name another --task",
        )
    return cfg


def transfer(
    society_run: Path,
    given: dict[str, Any],
    iteration: int | None = None,
    out: Path | None = None,
    progress: bool = True,
    backend: Backend | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate iteration `iteration` (default: the latest) of the run's society on another task; returns
    the transfer directory and the results (written to <dir>/iter_<k>/eval/results.json)."""
    from mft.pipeline import stages

    src = RunDir(society_run)
    run = src.run_config(hint="pass a run directory made by `mft run` (runs/<name>) to --society")
    latest = src.latest_society()
    k = latest if iteration is None else iteration
    if not 0 <= k <= latest:
        raise MftError(
            f"--iteration {k}: {society_run} has societies of iterations 0..{latest}",
            hint=f"use --iteration 0..{latest} (0: the base model)",
        )
    task_name = given.get("task") or "?"
    out = out if out is not None else src.path / TRANSFER / str(task_name)
    cfg = transfer_config(run, given, out)
    task = build_task(cfg)
    test = load_split(task, "test", cfg.n_test, cfg.split_seed, "--n-test")
    rd = RunDir(out)
    rd.lock()
    write_or_check(rd.path, cfg, [], test, task, rationalizing=RATIONALIZING)
    # the run is known by its manifest (written once), not by where it is: a run moved with its transfer/
    # is still the same run
    manifest = hashlib.blake2b(src.manifest.read_bytes(), digest_size=16).hexdigest()
    origin = {
        "society_run": str(src.path.resolve()),
        "run_manifest": manifest,
        "trained_on": run.task,
        "evaluated_on": cfg.task,
    }
    known = rd.path / TRANSFER_FILE
    if known.exists():
        before = json.loads(known.read_text(encoding="utf-8"))
        if before.get("run_manifest") != manifest:
            raise MftError(
                f"{out} holds the transfer of another run's society ({before.get('society_run')})",
                hint="pass another --out",
            )
    else:
        write_json_atomic(known, origin)
    if k >= 1:  # the run's society, its adapters by path; rewritten each time (the run may have moved)
        society = src.society_for(k, run)
        rd.write_society(k, society.generators, society.critics, {})
    backend = backend if backend is not None else build_backend(cfg, task)
    stages.check_max_new_tokens(backend, cfg.max_new_tokens or task.max_new_tokens)
    return out, stages.stage_eval(cfg, k, backend, task, test, progress)
