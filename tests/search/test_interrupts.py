"""Ctrl-C / SIGTERM handling, with real signals in a real process (the handler changes
process-wide state, so it never runs inside the test process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, signal, time
from search.interrupts import deferred, exit_within

exit_within(grace_s=30)
events = []
try:
    with deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)               # not interrupted: the block is deferred
        events.append("block finished")
        with deferred():
            pass                       # an inner block's end does not raise yet
        events.append("inner block finished")
    events.append("after the block")  # never reached
except KeyboardInterrupt:
    events.append("raised at the end of the block")
os.kill(os.getpid(), signal.SIGTERM)   # a second signal is ignored
time.sleep(0.2)
events.append("second signal ignored")
print(";".join(events))
"""

UNDEFERRED = """
import os, signal, time
from search.interrupts import exit_within

exit_within(grace_s=30)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
    print("slept")
except KeyboardInterrupt:
    print("raised at once")
"""


def _run(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_signal_inside_a_deferred_block_is_raised_when_the_block_ends():
    assert _run(SCRIPT) == (
        "block finished;inner block finished;raised at the end of the block;second signal ignored"
    )


def test_a_signal_outside_a_deferred_block_is_raised_at_once():
    assert _run(UNDEFERRED) == "raised at once"
