"""Writer locks: every directory mft writes a run, a debate or a reproduction into is locked while a
process writes it, so two processes never write one directory at once.

The lock is an advisory `flock` on `<dir>/.lock` (which holds the holder's pid), held until the process
exits and freed by the kernel when it is killed, so a killed run resumes at once by re-running it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from mft.errors import MftError
from mft.records import remove_stale_temps_under

LOCK = ".lock"


def make_dir(path: Path, what: str, flag: str) -> None:
    """Create directory `path` (and its parents) for writing, or one MftError naming it and `flag` (the
    setting that chose it) when it is a file, sits under a file or cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        where = "is a file" if file == path else f"is under {file}, which is a file"
        raise MftError(
            f"{what} {path} {where}, not a directory",
            hint=f"choose another directory ({flag}), or move that file away",
        ) from None
    except OSError as exc:
        raise MftError(
            f"cannot create {what} {path} ({exc.strerror})",
            hint=f"choose a directory you can write to ({flag})",
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MftError(f"{what} {path} is not writable", hint=f"choose a directory you can write to ({flag})")


_LOCKS: dict[Path, int] = {}  # directory (resolved) -> the open lock file this process holds


def lock_dir(path: Path, what: str, flag: str) -> None:
    """Make `path` (see `make_dir`) and hold its lock for the rest of this process's life, or refuse at once
    with one line naming the directory and the holder's pid when another process holds it.

    The lock is an advisory `flock` on `<path>/.lock`, which holds the holder's pid. The kernel frees it when
    the process exits or is killed, so a killed run is resumed by just re-running it. Locking a directory
    this process already holds does nothing. Holding it, temp files and directories left there by killed
    writers are removed.
    """
    make_dir(path, what, flag)
    key = path.resolve()
    if key in _LOCKS:
        return
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise MftError(
            f"cannot write in {what} {path} ({exc.strerror})",
            hint=f"choose a directory you can write to ({flag})",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise MftError(
            f"{what} {path} is in use by another mft process (pid {holder})",
            hint=f"wait for it to finish or stop it, or write elsewhere ({flag})",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[key] = fd
    remove_stale_temps_under(path)
