"""Reliability end to end, through the `mft` command in subprocesses: two processes on one
directory, a data file edited before a resume, bad output paths and sizes, an unreachable model, wall times
over a killed process. The in-process halves are in tests/unit/test_reliability.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mft.tasks.custom import CustomTask

pytestmark = pytest.mark.reliability

# small and fast: short responses, one problem per resumable chunk
TINY = """
task: arithmetic
agents: 2
rounds: 2
summarize: false  # no summaries: fewer generations (a run's default has them)
iterations: 1
n_train: 2
n_test: 4
chunk_size: 1
max_new_tokens: 24
min_examples: 1
ft_epochs: 1
ft_batch_size: 4
diversity_problems: 0
embedding_model: null
"""


def _mft(*args: str) -> list[str]:
    return [sys.executable, "-m", "mft", *args]


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the process ended before the point the test waits for"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mft: error: ") and "(fix: " in lines[0], proc.stderr
    return lines[0]


def _locked(path: Path) -> Callable[[], bool]:
    return lambda: (path / ".lock").exists() and (path / ".lock").read_text().strip() != ""


@pytest.mark.slow
def test_a_second_debate_into_the_same_directory_is_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "debate",
        "--agents",
        "2",
        "--rounds",
        "1",
        "--limit",
        "2",
        "--chunk-size",
        "1",
        "--max-new-tokens",
        "16",
    ]
    first = subprocess.Popen(_mft(*args, "--out", str(out), "--no-progress"), stdout=subprocess.DEVNULL)
    try:
        _wait(_locked(out), first)
        second = subprocess.run(
            _mft(*args, "--out", str(out), "--no-progress"), capture_output=True, text=True, timeout=120
        )
        line = _one_line_error(second)
        assert str(out) in line and f"pid {first.pid}" in line and "--out" in line
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    ids = [json.loads(x)["problem"]["id"] for x in (out / "debate.jsonl").read_text().splitlines()]
    assert len(ids) == 2 == len(set(ids))


def test_a_second_run_into_the_same_directory_is_refused_at_once(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    cmd = _mft(
        "run", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "r", "--no-progress"
    )
    run_dir = tmp_path / "runs" / "r"
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        _wait(_locked(run_dir), first)
        start = time.time()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        line = _one_line_error(second)
        assert str(run_dir) in line and f"pid {first.pid}" in line and "--name" in line
        assert time.time() - start < 30  # refused before any model work
        assert first.poll() is None  # and the first run goes on
    finally:
        first.kill()
        first.wait()


def test_resuming_after_a_custom_row_was_edited_is_refused_naming_the_problem(tmp_path: Path) -> None:
    data = tmp_path / "sums.jsonl"
    rows = [{"question": f"What is {i} + {2 * i}?", "answer": 3 * i} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("task: arithmetic", f"task: custom\ndata: {data}"))
    cmd = _mft(
        "run", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "c", "--no-progress"
    )
    run_dir = tmp_path / "runs" / "c"
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        _wait(lambda: (run_dir / "manifest.json").exists(), first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # edit the answer of one drawn train problem (its id does not change: it is keyed by the question)
    problem = CustomTask(data).load("train", 2)[1]
    line_no = int(problem.meta["source"].rsplit("line ", 1)[1])
    rows[line_no - 1]["answer"] += 1
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    line = _one_line_error(second)
    assert f"train problem {problem.id!r} changed" in line and str(run_dir) in line and "--name" in line


@pytest.mark.parametrize(
    "case",
    [
        "runs dir is a file",
        "out is a file",
        "huge max_new_tokens",
        "limit over the pool",
        "n_train over the pool",
    ],
)
def test_bad_output_paths_and_sizes_are_one_line(tmp_path: Path, case: str) -> None:
    file = tmp_path / "file"
    file.write_text("not a directory")
    debate = ["debate", "--agents", "2", "--limit", "1", "--no-progress", "--out"]
    args, expected = {
        "runs dir is a file": (
            ["run", "--runs-dir", str(file), "--n-train", "2", "--n-test", "2"],
            f"run directory {file / 'arithmetic-toy'} is under {file}, which is a file",
        ),
        "out is a file": ([*debate, str(file)], f"output directory {file} is a file"),
        "huge max_new_tokens": (
            [*debate, str(tmp_path / "d"), "--max-new-tokens", "100000000"],
            "max_new_tokens 100000000 does not fit in the context of model 'bundled' (1024 tokens",
        ),
        "limit over the pool": (
            [*debate, str(tmp_path / "d"), "--limit", "1000000000"],
            "--limit 1,000,000,000 is more than the test pool of task 'arithmetic' holds",
        ),
        "n_train over the pool": (
            ["run", "--runs-dir", str(tmp_path), "--n-train", "1000000000"],
            "--n-train 1,000,000,000 is more than the train pool",
        ),
    }[case]
    # a short timeout: before the pool check, an impossible split drew problems forever
    proc = subprocess.run(_mft(*args), capture_output=True, text=True, timeout=60)
    assert expected in _one_line_error(proc)


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_a_hub_id_that_cannot_be_fetched_is_one_line(tmp_path: Path, offline: bool) -> None:
    # offline: the user said so; else a hub address where nothing listens (as a machine without network)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update({"HF_HUB_OFFLINE": "1"} if offline else {"HF_ENDPOINT": "http://127.0.0.1:9"})
    args = ["debate", "--model", "nonexistent-org/nonexistent-model", "--limit", "1", "--out", str(tmp_path)]
    proc = subprocess.run(_mft(*args), capture_output=True, text=True, timeout=60, env=env)
    line = _one_line_error(proc)
    assert "'nonexistent-org/nonexistent-model' is not a local directory" in line and "local cache" in line


STOPPED = 4.0  # seconds the first process is frozen in its evaluation: wall time a report must count


@pytest.mark.slow
def test_wall_times_add_up_over_a_killed_process(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    tiny = TINY.replace("agents: 2", "agents: 1").replace("n_train: 2", "n_train: 1")
    # enough test problems that the evaluation outlasts the pause and the flush that follows it
    config.write_text(tiny.replace("n_test: 4", "n_test: 40"))
    cmd = _mft(
        "run", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "t", "--no-progress"
    )
    run_dir = tmp_path / "runs" / "t"
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        _wait(lambda: (run_dir / "iter_0" / "eval" / "debate.jsonl").exists(), first)
        first.send_signal(signal.SIGSTOP)  # frozen mid-evaluation: its wall time still passes
        time.sleep(STOPPED)
        first.send_signal(signal.SIGCONT)
        # its seconds so far reach timings.json within one flush (every 2 s) once it runs again
        deadline, killed = time.time() + 10, 0.0
        while killed < STOPPED and time.time() < deadline:
            time.sleep(0.1)
            if (run_dir / "timings.json").exists():
                killed = json.loads((run_dir / "timings.json").read_text()).get("iter_0/eval", 0.0)
        first.send_signal(signal.SIGKILL)
        assert not (run_dir / "iter_0" / "eval" / "results.json").exists(), "the evaluation finished"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert killed >= STOPPED
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    timings = json.loads((run_dir / "timings.json").read_text())
    # the killed process's seconds in the evaluation, plus the resumed one's (it redid the unfinished part)
    assert timings["iter_0/eval"] >= killed + 0.1, (killed, timings)
