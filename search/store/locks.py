"""Advisory file locks shared by processes on one machine: the kernel drops a lock when its
holder dies, so no lock here can go stale."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from optuna.storages.journal._file import BaseJournalFileLock  # not re-exported by Optuna


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a lock holder, a checkpoint writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class FlockJournalLock(BaseJournalFileLock):
    """An exclusive ``flock`` on ``<journal>.flock`` around each journal write.

    The kernel drops the lock when the holder's file descriptor closes, including when the
    process is killed, so there is no stale lock to detect and no grace period to wait out.
    A blocked ``acquire`` is interruptible: Ctrl-C and SIGTERM reach the waiter at once.
    Each acquire opens its own descriptor, so threads of one process exclude each other too.
    """

    def __init__(self, journal: Path) -> None:
        self.path = Path(str(journal) + ".flock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Unlock explicitly: a child forked meanwhile (a DataLoader or compile worker)
            # shares the open file, and closing our descriptor alone would not unlock it.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
