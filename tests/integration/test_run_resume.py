"""`mft run` killed (SIGKILL) mid-stage and re-run ends with the same artifacts as an uninterrupted run."""

from __future__ import annotations

import hashlib
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
iterations: 1
n_train: 8
n_test: 4
chunk_size: 2
min_examples: 1
ft_epochs: 1
ft_batch_size: 4
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
    """Content hash of every artifact except timings and creation time stamps."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.name not in ("timings.json", "manifest.json"):
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
    ]
    kills = sum(_kill_when(_cmd(config, killed), point) for point in kill_points)
    assert kills >= 3  # the process really was killed mid-run
    subprocess.run(_cmd(config, killed), check=True, capture_output=True)
    assert _artifacts(run) == expected
    assert not list(run.rglob("*.tmp"))
