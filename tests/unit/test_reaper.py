"""`mft.reaper`: the processes an mft process started end when it is killed by SIGKILL (vLLM's engine and
Ray's processes are such children); without the watchdog they would outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mft.reaper import _alive, _stat, descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")

# A stand-in for an mft process that starts an engine: a forked and a spawned child (each with a child of
# its own), their pids printed, then it waits to be killed.
PARENT = """
import multiprocessing as mp, os, subprocess, sys, time
from mft.reaper import start_reaper

def engine():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(600)

if __name__ == "__main__":
    if sys.argv[1] == "reap":
        start_reaper()
    kids = [mp.get_context(m).Process(target=engine) for m in ("fork", "spawn")]
    for k in kids:
        k.start()
    time.sleep(3)  # the grandchildren are started, and the watchdog has seen them
    print(" ".join(str(p) for p in [k.pid for k in kids]), flush=True)
    time.sleep(600)
"""


def _family(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], dict[int, int]]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    proc.stdout.readline()
    family = {p: s for p, s in descendants(proc.pid).items() if "mft.reaper" not in _cmdline(p)}
    return proc, family


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _wait_gone(family: dict[int, int], seconds: float) -> dict[int, int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p, s) for p, s in family.items()):
        time.sleep(0.1)
    return {p: s for p, s in family.items() if _alive(p, s)}


def _end(family: dict[int, int]) -> None:
    for pid, start in family.items():
        if _alive(pid, start):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_parents_children_and_grandchildren_end(tmp_path: Path) -> None:
    proc, family = _family(tmp_path, "reap")
    try:
        assert len(family) >= 4  # two children (fork, spawn), each with a child (and spawn's helper)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _wait_gone(family, 15.0) == {}
    finally:
        _end(family)


def test_without_the_watchdog_they_outlive_it(tmp_path: Path) -> None:
    """The control: the same family without `start_reaper` survives the kill (what the watchdog is for)."""
    proc, family = _family(tmp_path, "plain")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        assert len(_wait_gone(family, 2.0)) >= 4
    finally:
        _end(family)


def test_stat_reads_this_process_and_nothing_for_a_missing_one() -> None:
    state, ppid, start = _stat(os.getpid())  # type: ignore[misc]
    assert ppid == os.getppid() and start > 0 and state in "RS"
    assert _stat(2**22 + 7) is None
