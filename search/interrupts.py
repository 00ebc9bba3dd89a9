"""Ctrl-C and SIGTERM end a worker within a bounded time, whatever it is waiting on.

The first signal raises ``KeyboardInterrupt`` in the main thread, which unwinds the
running trial cleanly (trial FAIL "interrupted", MLflow run FAILED, locks released): a
blocking ``flock`` or sleep is interrupted at once, a torch operation at its end. Inside a
``deferred()`` block (a write to MLflow's database) it is raised at the end of the block
instead: cut in the middle of its transaction, such a write left the database locked and
the clean-up waiting on it until the watchdog struck. Later
signals are ignored so that they cannot break that clean-up half way (a terminal's Ctrl-C
reaches a ``--workers`` parent and its workers together, and the parent passes it on once
more). A watchdog bounds the clean-up: if it is still going after ``grace_s`` seconds (a
lock held by a hung process, a stuck server), the process exits at once with the same
code; its trial is then left RUNNING and the next run recovers it as lost (its process is
gone), exactly as after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

GRACE_S = 7.0  # a worker's clean-up after Ctrl-C / SIGTERM, at most
EXIT_INTERRUPTED = 130  # the shell's code for "ended by SIGINT"

_deferring = 0  # depth of deferred() blocks in the main thread
_pending = False  # a signal arrived inside one: raise at the end of the outermost


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that Ctrl-C / SIGTERM do not cut in half: an interrupt arriving inside it is
    raised when the outermost such block ends. Usable as a decorator. Only the main thread
    receives signals, so the block defers nothing in other threads."""
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _deferring == 0 and _pending:
            _pending = False
            raise KeyboardInterrupt


def exit_within(grace_s: float = GRACE_S, code: int = EXIT_INTERRUPTED) -> None:
    """Make SIGINT and SIGTERM raise ``KeyboardInterrupt`` once, then force an exit with
    ``code`` if the process has not ended ``grace_s`` seconds later. Call from the main
    thread of a command (it changes process-wide signal handling)."""
    interrupted = threading.Event()
    # Started now, not in the handler: starting a thread takes a lock of the threading
    # module that the interrupted main thread may be holding.
    threading.Thread(
        target=_watchdog, args=(interrupted, grace_s, code), daemon=True, name="interrupt-watchdog"
    ).start()

    def interrupt(signum: int, frame: object) -> None:
        global _pending
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        interrupted.set()
        if _deferring:
            _pending = True
            return
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _watchdog(interrupted: threading.Event, grace_s: float, code: int) -> None:
    interrupted.wait()
    time.sleep(grace_s)
    sys.stderr.write(
        f"interrupted: clean-up still running after {grace_s:g}s, exiting now; "
        f"the next run recovers the running trial as lost\n"
    )
    sys.stderr.flush()
    os._exit(code)
