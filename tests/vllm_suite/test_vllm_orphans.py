"""No vLLM engine process outlives the `mft` process that started it, even killed by SIGKILL (`mft.reaper`):
`mft run --backend vllm` killed mid-run and `mft serve --backend vllm` killed while serving, the engine
processes counted before and after."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.vllm_suite.test_vllm_run import CONFIG, _engine_processes


def _gone(pids: set[int], seconds: float = 30.0) -> set[int]:
    """Those of `pids` still running after at most `seconds` (the watchdog's grace included)."""
    deadline = time.time() + seconds
    while _engine_processes() & pids and time.time() < deadline:
        time.sleep(0.5)
    return _engine_processes() & pids


def _kill_once(
    cmd: list[str], log: Path, ready: re.Pattern[str] | None, before: set[int]
) -> tuple[set[int], int]:
    """Start `cmd` in its own session, wait for its engine (and `ready` in its log), SIGKILL the mft
    process alone (not its group); return the engine processes it had started and its process group."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ours: set[int] = set()
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        ours = _engine_processes() - before
        if ours and (ready is None or ready.search(log.read_text())):
            break
        time.sleep(0.5)
    alive = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL) if alive else None
    proc.wait()
    assert ours and alive, log.read_text()[-3000:]
    return ours, proc.pid


def _check(ours: set[int], group: int) -> None:
    try:
        assert _gone(ours) == set()
    finally:  # whatever is left, so that the next test starts clean
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def test_a_killed_run_takes_its_engine_along(tmp_path: Path) -> None:
    config = tmp_path / "vllm.yaml"
    config.write_text(CONFIG)
    cmd = [sys.executable, "-m", "mft", "run", "--config", str(config), "--runs-dir", str(tmp_path)]
    before = _engine_processes()
    _check(*_kill_once([*cmd, "--name", "killed", "--no-progress"], tmp_path / "run.log", None, before))


def test_a_killed_server_takes_its_engine_along(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "mft", "serve", "--agents", "2", "--backend", "vllm", "--host", "127.0.0.1",
        "--port", "0", "--log-level", "warning",
    ]  # fmt: skip
    before = _engine_processes()
    _check(*_kill_once(cmd, tmp_path / "serve.log", re.compile(r"listening on http://"), before))
