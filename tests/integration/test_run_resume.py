"""`mft run` killed (SIGKILL) mid-stage and re-run ends with the same artifacts as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SMALL = """
name: small
task: arithmetic
model: bundled
agents: 2
rounds: 2
summarize: false  # no summaries: fewer generations (a run's default has them)
iterations: 1
n_train: 8
n_test: 4
chunk_size: 2
min_examples: 1
ft_epochs: 1
ft_batch_size: 4
diversity_problems: 2
embedding_model: null
"""


def _cmd(config: Path, runs: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mft",
        "run",
        "--config",
        str(config),
        "--runs-dir",
        str(runs),
        "--no-progress",
    ]


def _artifacts(run_dir: Path) -> dict[str, str]:
    """Content hash of every artifact except timings, creation time stamps, the lock (it holds a pid) and
    the report (it shows wall times; it is checked separately)."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] == "plots" or rel.name in ("report.md", "report.html"):
            continue
        if path.is_file() and path.name not in ("timings.json", "manifest.json", ".lock"):
            out[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_artifacts(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_cmd(config, clean), check=True, capture_output=True)
    expected = _artifacts(clean / "small")
    assert (
        "iter_1/eval/results.json" in expected
        and "iter_1/agents/critic_1/adapter_model.safetensors" in expected
    )

    run = killed / "small"
    kill_points = [
        lambda: _lines(run / "iter_0" / "eval" / "debate.jsonl") >= 2,  # mid base eval
        lambda: _lines(run / "iter_1" / "debate.jsonl") >= 2,  # mid training debate
        lambda: (run / "iter_1" / "agents" / "gen_0").exists(),  # mid finetune
        lambda: _lines(run / "iter_1" / "eval" / "debate.jsonl") >= 2,  # mid final eval
        # mid diversity: the evaluation is written, its diversity not yet
        lambda: (
            (run / "iter_1" / "eval" / "results.json").exists()
            and not (run / "iter_1" / "diversity.json").exists()
        ),
    ]
    kills = [_kill_when(_cmd(config, killed), point) for point in kill_points]
    assert sum(kills) >= 4 and kills[-1], kills  # the process really was killed mid-run, and mid-diversity
    subprocess.run(_cmd(config, killed), check=True, capture_output=True)
    assert _artifacts(run) == expected
    assert not list(run.rglob("*.tmp"))


@pytest.mark.slow
def test_kill_during_grpo_sampling_and_training_then_resume_gives_the_same_artifacts(tmp_path: Path) -> None:
    """Ours (GRPO): killed while an agent samples its replies and trains on them (after its data is
    written, before its adapter is), and again while the next agent does; the resumed run's adapters and
    results equal an uninterrupted run's (the sampling is seeded)."""
    config = tmp_path / "grpo.yaml"
    config.write_text(SMALL + "method: ours_grpo\ngrpo_group: 2\n")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_cmd(config, clean), check=True, capture_output=True)
    expected = _artifacts(clean / "small")
    assert "iter_1/agents/gen_0/train_stats.json" in expected

    agents = killed / "small" / "iter_1" / "agents"
    kill_points = [
        lambda: (agents.parent / "data" / "sizes.json").exists() and not (agents / "critic_0").exists(),
        lambda: (agents / "critic_0").exists() and not (agents / "critic_1").exists(),
    ]
    kills = [_kill_when(_cmd(config, killed), point) for point in kill_points]
    assert all(kills), kills
    subprocess.run(_cmd(config, killed), check=True, capture_output=True)
    assert _artifacts(killed / "small") == expected


SMALL_2IT = SMALL.replace("iterations: 1", "iterations: 2").replace("n_train: 8", "n_train: 6")


def _finished(run: Path) -> dict[str, str]:
    """The finished artifacts (no temp files): a restart that adds or extends none made no progress."""
    return {k: v for k, v in _artifacts(run).items() if not k.endswith(".tmp")} if run.exists() else {}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """An uninterrupted 2-iteration run, with the label of every write point it passed, in order."""
    root = tmp_path_factory.mktemp("clean")
    config = root / "small.yaml"
    config.write_text(SMALL_2IT)
    log = root / "points.log"
    env = {**os.environ, "MFT_FAULT_LOG": str(log)}
    subprocess.run(_cmd(config, root / "runs"), check=True, capture_output=True, env=env)
    return config, root / "runs" / "small", [line.split("\t")[1] for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_kill_at_many_write_points_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, clean_run: tuple[Path, Path, list[str]]
) -> None:
    """SIGKILL at seeded checkpoints of every kind (half-way through a JSONL append, between a temp file and
    its rename: results, datasets, adapters, the report), restart each time, compare with a clean run."""
    import random

    config, clean, points = clean_run
    expected = _artifacts(clean)
    killed = tmp_path / "killed"
    run = killed / "small"
    rng = random.Random(0)
    hit: list[str] = []
    stalled = 0
    for _ in range(200):
        # a restart first re-passes a few write points (the manifest, timings, the unfinished stage's), so
        # kills 6-12 points in: each still lands past the last one, and a restart (a process start and redone
        # work) is what this test, the suite's longest, spends its time on
        k = rng.randint(6, 12) + stalled
        trace = tmp_path / "trace.log"
        trace.unlink(missing_ok=True)
        before = _finished(run)
        env = {**os.environ, "MFT_FAULT": f"kill@{k}", "MFT_FAULT_LOG": str(trace)}
        proc = subprocess.run(_cmd(config, killed), capture_output=True, env=env)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        hit.append(trace.read_text().splitlines()[-1].split("\t")[1])
        stalled = 0 if _finished(run) != before else stalled + 2  # reach past the redone writes
    else:
        pytest.fail("the run never finished")
    print(f"\n{len(hit)} kills at {len(set(hit))} kinds of write point (clean run: {len(points)} points)")
    assert len(hit) >= 10
    kinds = {h.split(" ")[0] + " " + h.split(" ")[1].split(".")[-1] for h in hit}
    assert {"append jsonl", "write json", "save adapter"} <= {
        k if not k.startswith("save adapter") else "save adapter" for k in kinds
    }, kinds
    assert _artifacts(run) == expected
    assert not list(run.rglob("*.tmp"))
    assert (run / "report.md").read_text().startswith("#") and (run / "report.html").read_text().endswith(
        "</html>\n"
    )
    # no record lost or duplicated: every debate file has each problem exactly once
    for path in run.rglob("*debate.jsonl"):
        ids = [json.loads(line)["problem"]["id"] for line in path.read_text().splitlines()]
        assert len(ids) == len(set(ids)), path


@pytest.mark.slow
@pytest.mark.parametrize("point", ["append debate.jsonl", "write results.json", "save adapter gen_0"])
def test_disk_full_is_one_clear_error_and_resume_completes(
    tmp_path: Path, clean_run: tuple[Path, Path, list[str]], point: str
) -> None:
    """A simulated ENOSPC at a write: exit code 28 and one line; the re-run resumes to the clean result."""
    config, clean, labels = clean_run
    full = tmp_path / "full"
    n = labels.index(point) + 1
    env = {**os.environ, "MFT_FAULT": f"enospc@{n}"}
    proc = subprocess.run(_cmd(config, full), capture_output=True, text=True, env=env)
    assert proc.returncode == 28, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("mft: error: no space left on the device while writing ")
    assert "Traceback" not in proc.stderr
    run = full / "small"
    # what was finished before is intact: every JSONL line parses, every JSON file loads
    for path in run.rglob("*.jsonl"):
        for line in path.read_text().splitlines()[:-1]:
            json.loads(line)
    for path in run.rglob("*.json"):
        json.loads(path.read_text())
    subprocess.run(_cmd(config, full), check=True, capture_output=True)
    assert _artifacts(run) == _artifacts(clean)
