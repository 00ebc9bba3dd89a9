"""Ctrl-C, SIGTERM and SIGUSR1 end a worker within a bounded time, whatever it is waiting on.

SIGTERM and SIGUSR1 are what a scheduler sends before it stops a job (SLURM: a time limit
or a preemption). While a training loop runs (``stop_at_batch_boundary()``), a signal only
asks it to stop: the loop saves its state at the next batch boundary, mid-epoch included,
and raises ``StopRequested``, so that the next run continues where it stopped. Anywhere
else the first signal raises ``KeyboardInterrupt`` in the main thread, which unwinds the
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

Exit codes (``exit_code()``): 128 + the signal's number, as a shell reports a process the
signal ended: 130 after Ctrl-C (SIGINT), 143 after SIGTERM, 138 after SIGUSR1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

# A worker's clean-up after a signal, at most (4 s to spare of the 10 s allowed); a SLURM
# job whose warning comes minutes ahead gives it more (CIFAR_SEARCH_GRACE_S, set by
# cli.py slurm's scripts).
GRACE_S = float(os.environ.get("CIFAR_SEARCH_GRACE_S") or 6.0)
EXIT_INTERRUPTED = 130  # the shell's code for "ended by SIGINT"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
# every code a command interrupted by one of STOP_SIGNALS exits with
INTERRUPTED_CODES = frozenset(128 + int(s) for s in STOP_SIGNALS)

_deferring = 0  # depth of deferred() blocks in the main thread
_at_boundaries = 0  # depth of stop_at_batch_boundary() blocks in the main thread
_pending = False  # a signal arrived inside one of those: raise when they have all ended
_signal: int | None = None  # the first stop signal received


def stop_requested() -> bool:
    """True once a stop signal has been received (whether or not it was raised yet)."""
    return _signal is not None


def exit_code() -> int:
    """The exit code of a command ended by the signal it received (130 by default)."""
    return 128 + _signal if _signal is not None else EXIT_INTERRUPTED


def signal_name() -> str:
    return signal.Signals(_signal).name if _signal is not None else "SIGINT"


def ending_reason(exc: BaseException) -> str:
    """How a run that ended with ``exc`` is recorded: ``interrupted (SIGTERM)`` after a stop
    signal or Ctrl-C (the run continues from its checkpoint when rerun), else the error."""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({signal_name()})"
    return f"{type(exc).__name__}: {exc}"


def _raise_pending_if_free() -> None:
    global _pending
    if _pending and _deferring == 0 and _at_boundaries == 0:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def stop_at_batch_boundary() -> Iterator[Callable[[], bool]]:
    """A training block that stops itself: inside it a signal raises nothing, and the
    training loop polls the yielded callable between batches, saves its state and raises
    ``StopRequested`` (a KeyboardInterrupt). A stop that arrived when the loop had already
    finished is raised as ``KeyboardInterrupt`` when the block ends. Main thread only."""
    global _at_boundaries, _pending
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    _at_boundaries += 1
    try:
        yield stop_requested
    except KeyboardInterrupt:
        _pending = False  # the loop stopped: this exception carries the stop
        raise
    finally:
        _at_boundaries -= 1
    _raise_pending_if_free()


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
        _raise_pending_if_free()


def exit_within(grace_s: float = GRACE_S) -> None:
    """Make SIGINT, SIGTERM and SIGUSR1 stop the command once (raise ``KeyboardInterrupt``,
    or ask a training loop to stop at its next batch boundary), then force an exit with
    ``exit_code()`` if the process has not ended ``grace_s`` seconds later. Call from the
    main thread of a command (it changes process-wide signal handling)."""
    interrupted = threading.Event()
    # Started now, not in the handler: starting a thread takes a lock of the threading
    # module that the interrupted main thread may be holding.
    threading.Thread(
        target=_watchdog, args=(interrupted, grace_s), daemon=True, name="interrupt-watchdog"
    ).start()

    def interrupt(signum: int, frame: object) -> None:
        global _pending, _signal
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _signal = signum
        interrupted.set()
        if _deferring or _at_boundaries:
            _pending = True
            return
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        signal.signal(sig, interrupt)


def _watchdog(interrupted: threading.Event, grace_s: float) -> None:
    interrupted.wait()
    time.sleep(grace_s)
    sys.stderr.write(
        f"interrupted: clean-up still running after {grace_s:g}s, exiting now; "
        f"the next run recovers the running trial as lost\n"
    )
    sys.stderr.flush()
    os._exit(exit_code())
