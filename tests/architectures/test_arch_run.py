"""One `mft run` iteration (N=2) on each family's taught model, and a kill mid-run resumed to the same end.

The taught models answer every arithmetic question with REPLY and then end their turn, so both agents
agree, the run builds consensus data, LoRA-finetunes four agents on a real architecture and chat template,
and evaluates them. Every recorded response must be exactly REPLY: generation stopped at the end-of-turn
token and left it out of the text.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mft.cli import main
from mft.records import DebateRecord, read_jsonl
from tests.architectures.tiny import REPLY, TinyModels
from tests.integration.test_run_resume import _artifacts

pytestmark = pytest.mark.architectures

AGENTS = ("gen_0", "gen_1", "critic_0", "critic_1")


def _args(model: Path, runs_dir: Path, name: str) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--agents",
        "2",
        "--no-summarize",  # no summaries: fewer generations (a run's default has them)
        # the taught agents never change their answer (no D_C-): the critics train on D_C+ alone
        "--critic-corrected-share",
        "0",
        "--iterations",
        "1",
        "--n-train",
        "4",
        "--n-test",
        "4",
        "--diversity-problems",
        "0",
        "--min-examples",
        "1",
        "--max-new-tokens",
        "24",
        "--temperature",
        "0",
        "--ft-epochs",
        "1",
        "--ft-batch-size",
        "2",
        "--runs-dir",
        str(runs_dir),
        "--name",
        name,
        "--no-progress",
    ]


@dataclass
class CleanRun:
    run_dir: Path
    rc: int
    points: list[str]  # the label of every durable write, in order (MFT_FAULT_LOG)


class CleanRuns:
    """One uninterrupted run per family, in this process, made the first time a test asks for it."""

    def __init__(self, root: Path, models: TinyModels) -> None:
        self.root, self.models = root, models
        self._runs: dict[str, CleanRun] = {}

    def get(self, family: str) -> CleanRun:
        if family not in self._runs:
            model = self.models.taught(family)
            log = self.root / f"{family}.points"
            with pytest.MonkeyPatch.context() as mp:
                mp.delenv("MFT_FAULT", raising=False)
                mp.setenv("MFT_FAULT_LOG", str(log))
                rc = main(_args(model, self.root, family))
            points = [line.split("\t")[1] for line in log.read_text().splitlines()] if log.exists() else []
            self._runs[family] = CleanRun(self.root / family, rc, points)
        return self._runs[family]


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> CleanRuns:
    return CleanRuns(tmp_path_factory.mktemp("runs"), tiny_models)


def test_one_iteration_with_two_agents(clean_runs: CleanRuns, family: str) -> None:
    run = clean_runs.get(family)
    assert run.rc == 0
    it = run.run_dir / "iter_1"
    # the debates first (a backend that runs past the end of turn shows here; its answers then disagree
    # across rounds and the generators get no data), then what the finetuning made of them
    for debate in ("iter_0/eval/debate.jsonl", "iter_1/debate.jsonl", "iter_1/eval/debate.jsonl"):
        records = read_jsonl(run.run_dir / debate, DebateRecord)
        assert len(records) == 4, debate
        for rec in records:
            # two rounds, two agents, each exactly the taught reply: nothing after the end of turn
            assert rec.responses == [[REPLY, REPLY], [REPLY, REPLY]], (debate, rec.responses)
            assert rec.consensus == "7"
    for agent in AGENTS:
        assert (it / "agents" / agent / "adapter_model.safetensors").exists(), agent
        stats = json.loads((it / "agents" / agent / "train_stats.json").read_text())
        # the examples had labelled tokens: a finite, positive loss
        assert stats["steps"] >= 1 and math.isfinite(stats["first_loss"]) and stats["first_loss"] > 0, stats
        assert (it / "data" / f"{agent}.jsonl").read_text().strip(), agent
    results = json.loads((it / "eval" / "results.json").read_text())
    assert results["iteration"] == 1


# One kill per family, each at another kind of durable write: half-way through appending a debate's
# records (a torn last line: base eval, training debate, final eval), writing an agent's training data,
# saving an adapter. Each costs a killed process and an in-process resume (a few seconds).
KILLS = [
    pytest.param("gemma2", "append debate.jsonl", 1, id="gemma2-mid-base-eval-append"),
    pytest.param("llama3", "append debate.jsonl", 2, id="llama3-mid-train-debate-append"),
    pytest.param("qwen2_5", "write gen_1.jsonl", 1, id="qwen2_5-mid-data-write"),
    pytest.param("phi3", "save adapter gen_1", 1, id="phi3-mid-adapter-save"),
    pytest.param("qwen3", "save adapter critic_0", 1, id="qwen3-mid-critic-save"),
    pytest.param("mistral", "append debate.jsonl", 3, id="mistral-mid-final-eval-append"),
]


@pytest.mark.parametrize(("family", "point", "occurrence"), KILLS)
def test_killed_run_resumes_to_the_same_artifacts(
    clean_runs: CleanRuns,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    family: str,
    point: str,
    occurrence: int,
) -> None:
    clean = clean_runs.get(family)
    assert clean.rc == 0
    hits = [i for i, label in enumerate(clean.points) if label == point]
    assert len(hits) >= occurrence, f"the clean run never reached {point!r} #{occurrence}: {clean.points}"
    at = hits[occurrence - 1] + 1
    model = clean_runs.models.taught(family)
    runs = tmp_path / "runs"
    trace = tmp_path / "trace.log"
    env = {
        **os.environ,
        "MFT_FAULT": f"kill@{at}",
        "MFT_FAULT_LOG": str(trace),
        "OMP_NUM_THREADS": "1",  # as the in-process runs (conftest.one_torch_thread)
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mft", *_args(model, runs, family)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert trace.read_text().splitlines()[-1].split("\t")[1] == point  # killed where meant to
    assert not (runs / family / "iter_1" / "eval" / "results.json").exists()
    monkeypatch.delenv("MFT_FAULT", raising=False)
    monkeypatch.delenv("MFT_FAULT_LOG", raising=False)
    assert main(_args(model, runs, family)) == 0
    resumed = _artifacts(runs / family)
    assert resumed == _artifacts(clean.run_dir)
    assert not list((runs / family).rglob("*.tmp"))
    records = read_jsonl(runs / family / "iter_1" / "debate.jsonl", DebateRecord)
    assert len({r.problem.id for r in records}) == len(records) == 4
