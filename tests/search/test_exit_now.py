"""How a command ends as a program (``cli_setup.exit_now``): its exit status, its last
output, its exit handlers, threads and temporary folders as with ``sys.exit``, but no
interpreter tear-down (the 1-2 s of freeing torch's and MLflow's modules). Run in real
processes: the point is what the process does when it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from search import cli_setup

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import atexit, os, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from search import cli_setup

out = Path(os.environ["OUT"])


class TornDown:  # its __del__ runs only if the interpreter tears __main__ down
    def __del__(self):
        (out / "torn-down").write_text("yes")


kept = TornDown()
pool = ThreadPoolExecutor(2)  # alive at exit, as MLflow's downloads and torch.compile leave one


@click.group(cls=cli_setup.Commands)
def main():
    pass


@main.command()
@click.argument("how")
def run(how):
    folder = tempfile.TemporaryDirectory(dir=out)  # still open at exit: removed by then
    (out / "folder").write_text(folder.name)
    atexit.register(lambda: (out / "atexit").write_text("ran"))

    def late():
        time.sleep(0.5)
        (out / "exiting").write_text("")  # the main thread is in the exit by now
        time.sleep(1.5 if how == "signal" else 0)
        (out / "thread").write_text("joined")

    pool.submit(time.sleep, 0.1).result()  # the pool's worker thread now idles
    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    print("last line")  # stdout is a pipe: buffered until the exit flushes it
    if how == "code":
        sys.exit(3)
    if how == "message":
        sys.exit("something went wrong")


main()
"""


@pytest.mark.parametrize(
    ("how", "status", "stderr"),
    [("normal", 0, ""), ("code", 3, ""), ("message", 1, "something went wrong\n")],
)
def test_a_program_ends_like_sys_exit_without_the_tear_down(
    tmp_path: Path, how: str, status: int, stderr: str
) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), "run", how],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (status, "last line\n", stderr)
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
    assert not Path((tmp_path / "folder").read_text()).exists()
    assert not (tmp_path / "torn-down").exists()  # ended before the tear-down


def test_a_signal_during_the_exit_leaves_the_status_and_prints_nothing(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(script), "run", "signal"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "exiting").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # Ctrl-C while the exit waits for the thread
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (0, "last line\n", "")
    assert (tmp_path / "atexit").read_text() == "ran"  # the exit handlers still ran


def test_the_same_program_with_sys_exit_is_torn_down(tmp_path: Path) -> None:
    """The check above can fail: ending through Python's own exit runs the __del__."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM.replace("main()\n", "main.main(sys.argv[1:])\n"))
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), "run", "code"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 3
    assert (tmp_path / "torn-down").read_text() == "yes"


def test_called_with_arguments_it_raises_system_exit_as_click_does() -> None:
    @click.group(cls=cli_setup.Commands)
    def main() -> None:
        pass

    @main.command()
    def fail() -> None:
        sys.exit(4)

    with pytest.raises(SystemExit) as ended:
        main(["fail"])
    assert ended.value.code == 4
    with pytest.raises(SystemExit) as ended:  # a user error: one line, 2
        main(["nope"])
    assert ended.value.code == 2
