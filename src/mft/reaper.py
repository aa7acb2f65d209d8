"""No process outlives the mft process that started it, even when that one is killed by SIGKILL.

vLLM runs its engine in child processes and Ray starts its own: when the mft process exits normally they
are shut down, but a SIGKILL (or an out-of-memory kill) gives it no chance to, and they go on holding memory
and, on a GPU, the device. `start_reaper()` starts one small watchdog process per mft process (before
such children are started): it notes the mft process's descendants every half second, and once the mft
process is gone (exited, or a zombie waiting to be reaped) it sends each descendant it noted that still runs
SIGTERM, then SIGKILL to any left after a grace period. Each is checked by its start time as well as its
pid, so a recycled pid is never signalled.

It reads `/proc` (Linux); elsewhere `start_reaper` does nothing. Run as `python -m mft.reaper PID START`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INTERVAL_S = 0.5  # how often the watchdog looks
GRACE_S = 5.0  # between SIGTERM and SIGKILL
_started: dict[int, subprocess.Popen[bytes]] = {}  # each process's watchdog (a forked child has its own)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a running process, from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """The running descendants of `root` (children, theirs, ...): pid -> start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[1], []).append(int(entry.name))
            starts[int(entry.name)] = st[2]
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out and pid in starts:
            out[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[0] != "Z"


def watch(parent: int, parent_start: int) -> None:
    """The watchdog: note `parent`'s descendants while it runs; then end those still running."""
    me = os.getpid()
    known: dict[int, int] = {}
    while _alive(parent, parent_start):
        known.update(descendants(parent))
        known = {pid: start for pid, start in known.items() if pid != me and _alive(pid, start)}
        time.sleep(INTERVAL_S)
    left = {pid: start for pid, start in known.items() if _alive(pid, start)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, start in left.items():
            if _alive(pid, start):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.time() + GRACE_S
        while sig == signal.SIGTERM and time.time() < deadline and any(_alive(p, s) for p, s in left.items()):
            time.sleep(0.1)


def start_reaper() -> int | None:
    """Start this process's watchdog (once; Linux only): returns its pid, None where it does not run."""
    me = os.getpid()
    st = _stat(me) if sys.platform.startswith("linux") else None
    if st is None or me in _started:
        return None
    proc = _started[me] = subprocess.Popen(
        [sys.executable, "-m", "mft.reaper", str(me), str(st[2])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the terminal's process group does not stop it first
        close_fds=True,
    )
    return proc.pid


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]))
