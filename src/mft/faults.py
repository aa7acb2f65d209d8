"""Fault injection for the reliability tests: kill the process or fill the disk at a chosen write.

Every durable write in mft (a JSONL append, a whole-file write, an adapter save, a report) passes through
`checkpoint(where)` at its most fragile moment: half-way through an append, or after the temporary file
is written and before it is renamed into place. With no `MFT_FAULT` in the environment the function
returns at once. With

    MFT_FAULT=kill@N      the N-th checkpoint of the process SIGKILLs it (a power cut at that point);
    MFT_FAULT=enospc@N    the N-th checkpoint raises OSError(ENOSPC) (the disk filled up there);
    MFT_FAULT_LOG=PATH    every checkpoint appends its label to PATH (to count and name the points).

The resume tests use it to kill a run at many points and check nothing is lost, duplicated or torn.
"""

from __future__ import annotations

import errno
import os
import signal

_count = 0


def checkpoint(where: str) -> None:
    spec = os.environ.get("MFT_FAULT")
    log = os.environ.get("MFT_FAULT_LOG")
    if not spec and not log:
        return
    global _count
    _count += 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{_count}\t{where}\n")
    if not spec:
        return
    kind, _, n = spec.partition("@")
    if _count != int(n):
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
