"""A run's manifest (`RUN/manifest.json`): what the run was made from, and whether a later invocation may
continue it.

    config          the run's settings, as JSON
    seed            its seed
    task            the task's name and version (its prompts and scoring)
    versions        of mft, torch, transformers and peft
    problem_hashes  per split, a short content hash of each problem by id: the one record of its problems
    data            where the task's problems came from (source, pool sizes, skipped bad-gold rows)
    created         when

Every later invocation (`mft run` and every stage command alike) continues the run only with the same
settings (those in `RESUMABLE_CHANGES` excepted; settings renamed since are read under their new names, and
settings added since as the value the run used), the same task version and the same problems. Manifests of
older versions hold a `problems` digest per split beside the hashes (ignored), or no hashes (not checked).
This module knows no method: the rule of the methods that rationalize (STaR's) is passed in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mft.errors import MftError
from mft.records import Problem, problem_hashes, write_json_atomic

if TYPE_CHECKING:
    from mft.config import RunConfig
    from mft.tasks.base import Task

MANIFEST = "manifest.json"
# Settings added after runs were made, with the value that does what those runs did: a run directory whose
# manifest lacks one continues only with that value (and is refused with any other, as for any setting).
SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {
    "ft_group_by_length": False,
    "ft_precision": "fp32",
    "chat_template_kwargs": {},
    "ft_gradient_checkpointing": False,
    "ft_warmup_ratio": 0.0,
    "ft_lr_schedule": "linear",
    "summarizer_model": None,
    # used only by the preference method, which came with them: any older run continues with the defaults
    "ft_objective_generator": "dpo",
    "ft_objective_critic": "dpo",
    "dpo_beta": 0.1,
    "method_temperatures": {},
    "interaction": "debate",
    # used only by Ours (GRPO), which came with them
    "grpo_group": 4,
    "grpo_loss": "grpo",
    "grpo_beta": 0.04,
    "grpo_epsilon": 0.2,
    "grpo_updates": 2,
    "grpo_reference": "base",
    "grpo_format_reward": 0.0,
}
# Settings a run may change between invocations: moving the directory, asking for more iterations, or
# logging to other experiment trackers (they change no result).
RESUMABLE_CHANGES = frozenset({"runs_dir", "iterations", "report_to"})


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mft", "torch", "transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def renamed_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest's config with settings renamed since then under their new names: `critic_positive_fraction`
    (the share of D_C+) is `critic_corrected_share` = 1 - it (the share of D_C-, the same mix wherever the
    agent had any D_C-)."""
    if "critic_positive_fraction" not in config:
        return config
    out = {k: v for k, v in config.items() if k != "critic_positive_fraction"}
    old = config["critic_positive_fraction"]
    out.setdefault("critic_corrected_share", 1 - old if isinstance(old, int | float) else old)
    return out


def settings_diff(old_config: dict[str, Any], cfg: RunConfig, *, rationalizing: Collection[str]) -> list[str]:
    """The settings of `cfg` that differ from a manifest's `old_config` (those that change results).

    `rationalizing`: the methods (as a config names them) that rationalize (STaR's rule). Rationalization
    came with its setting, `star_rationalize`: an older run of such a method made none; for other methods
    the setting does nothing, so an older run of theirs continues with the default."""
    config = json.loads(cfg.model_dump_json())
    old_config = renamed_settings(old_config)
    rationalized = {"star_rationalize": old_config.get("method") not in rationalizing}
    before = {**SETTINGS_BEFORE_THEY_EXISTED, **rationalized, **old_config}
    return sorted(k for k in config if k not in RESUMABLE_CHANGES and before.get(k) != config[k])


def write_or_check(
    run_dir: Path,
    cfg: RunConfig,
    train: list[Problem],
    test: list[Problem],
    task: Task,
    *,
    rationalizing: Collection[str],
) -> None:
    """First run: write `run_dir`'s manifest. Later runs: refuse to mix the run directory with another config
    (`settings_diff`, with the `rationalizing` methods), another version of the task (its prompts or
    scoring), or problems other than those it was made from (its data changed)."""
    path = run_dir / MANIFEST
    hashes = {"train": problem_hashes(train), "test": problem_hashes(test)}
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = settings_diff(old["config"], cfg, rationalizing=rationalizing)
        if diff:
            raise MftError(
                f"{run_dir} was made with other settings ({', '.join(diff)} differ)",
                hint="use another --name, or delete that directory to start fresh",
            )
        made = old.get("task")
        if isinstance(made, dict) and made.get("version") not in (None, task.version):
            # the same settings, but the task's prompts or scoring changed since (another mft version):
            # its records would mix with this version's
            raise MftError(
                f"{run_dir} was made with task {made.get('name')!r} version {made['version']}, not "
                f"{task.version} (its prompts or scoring changed since)",
                hint="use another --name, or delete that directory to start fresh",
            )
        if isinstance(old.get("problem_hashes"), dict):  # runs made before they were recorded: no check
            _check_problems(run_dir, old["problem_hashes"], hashes)
        return
    write_json_atomic(
        path,
        {
            "config": json.loads(cfg.model_dump_json()),
            "seed": cfg.seed,
            "task": {"name": task.name, "version": task.version},
            "versions": versions(),
            "problem_hashes": hashes,
            "data": getattr(task, "loads", {}),  # source, pool sizes, skipped bad-gold rows
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def record_load_warnings(run_dir: Path, warnings: list[str]) -> None:
    """Keep the model's load warnings (`Backend.load_warnings`) in the run's manifest, `load_warnings`
    (rewritten only when they change; not a setting, so never compared on resume)."""
    path = run_dir / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("load_warnings", []) != warnings:
        write_json_atomic(path, {**manifest, "load_warnings": warnings})


def _check_problems(run_dir: Path, old: dict[str, Any], new: dict[str, dict[str, str]]) -> None:
    """Refuse to resume on problems that differ from those the run was made from (an edited data file): its
    records would mix old and new problems."""
    changes: list[str] = []
    for split, hashes in new.items():
        recorded = old.get(split)
        before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        for pid, h in hashes.items():
            if pid not in before:
                changes.append(f"{split} problem {pid!r} is not one it was made from")
            elif before[pid] != h:
                changes.append(f"{split} problem {pid!r} changed (its question or answer differs)")
        changes += [f"{split} problem {pid!r} is gone from the data" for pid in before if pid not in hashes]
    if changes:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise MftError(
            f"{run_dir}: the data changed since this run started: {changes[0]}{more}",
            hint=f"restore the data it was made from, or start afresh with another --name "
            f"(or delete {run_dir})",
        )
