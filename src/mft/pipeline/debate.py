"""`mft debate`: one multiagent debate of the base model's N copies (in a mixed society, each agent a copy
of its own base) on a task split, with its accuracies.

<out>/debate.jsonl    one record per problem (appended as chunks finish; resumable)
<out>/outcomes.jsonl.gz  one line per problem: every answer, the votes, what was right (`mft.eval.outcomes`)
<out>/summary.json    config, accuracies, tokens and time of this invocation, backend, data source
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from mft.config import DebateConfig
from mft.debate.engine import run_debate
from mft.eval.metrics import Estimate, as_dict
from mft.eval.outcomes import accuracies, outcomes_of, write_outcomes
from mft.locks import lock_dir
from mft.pipeline.assemble import base_society, build_backend, build_task, debate_settings
from mft.pipeline.stages import check_max_new_tokens
from mft.records import problems_digest, write_json_atomic
from mft.rundir import OUTCOMES
from mft.tasks.base import load_split
from mft.toy import check_split_seed


@dataclass
class DebateOutcome:
    problems: int
    accuracy: dict[str, Estimate]  # single / majority / debate


def debate(cfg: DebateConfig, progress: bool = True) -> DebateOutcome:
    """Debate `cfg.limit` problems of `cfg.split`; writes the records and the summary into `cfg.out`."""
    task = build_task(cfg)
    for model in cfg.base_models():
        check_split_seed(model, task.name, cfg.split_seed)
    problems = load_split(task, cfg.split, cfg.limit, cfg.split_seed, "--limit")
    lock_dir(cfg.out, "output directory", "--out")  # another process debating into it: refused at once
    backend = build_backend(cfg, task)
    check_max_new_tokens(backend, cfg.max_new_tokens or task.max_new_tokens)
    start = time.time()
    records = run_debate(
        backend,
        task,
        problems,
        base_society(cfg),
        debate_settings(cfg, task, cfg.seed),
        cfg.out / "debate.jsonl",
        progress=progress,
    )
    outcomes = outcomes_of(records, task)
    write_outcomes(cfg.out / OUTCOMES, outcomes)
    acc = accuracies(outcomes)
    summary: dict[str, Any] = {
        "config": json.loads(cfg.model_dump_json()),
        "accuracy": as_dict(acc),
        "load_warnings": backend.load_warnings,
        "seconds_this_invocation": round(time.time() - start, 2),
        "generated_tokens_this_invocation": backend.stats.completion_tokens,
        "backend": backend.describe(),
        "problems": problems_digest(problems),
        "data": getattr(task, "loads", {}),  # source, pool sizes, skipped bad-gold rows
    }
    write_json_atomic(cfg.out / "summary.json", summary)
    return DebateOutcome(len(records), acc)
