"""Worker processes for the process-level tests without 4-7 s of imports each: a fork server.

A ``python cli.py search ...`` spends most of its first seconds importing torch, MLflow,
Optuna, scikit-learn and SciPy; the resilience tests start dozens of them. The server is a
Python process that imports those libraries once and then only forks: it starts no thread
itself (an imported library may keep one: pyarrow's allocator thread, which its fork
handlers make safe), runs no torch operation and opens no store or socket of its own. Each
request forks a child that is an ordinary process of its own: its own pid (a child of
the server, not of pytest), file descriptors, working directory and environment, real
signals (Ctrl-C/SIGTERM handlers, ``kill -9``), real file locks, and the exit code
``python cli.py ARGS`` (or ``python -c CODE``) would have, ending as that would (cli.py:
``cli_setup.exit_now``; code: a normal interpreter exit; both run the atexit handlers and
join the non-daemon threads). Only its imports are already done.

What a child cannot take from its environment: variables read while the libraries were
imported keep the server's values. The server imports torch with ``OMP_NUM_THREADS=1``:
its children train single-threaded, as the tests' own training does (conftest.py), since
several of them share the cores with each other and with the tests (a child's
``os.environ`` is the one it was given: ``--workers`` still sets its workers' own).

``spawn_cli(args, cwd, env)`` and ``spawn_code(code, cwd, env)`` return a ``Forked``, which
offers the part of ``subprocess.Popen`` the tests use: ``pid``, ``poll``, ``wait``,
``communicate`` (stdout and stderr go to files, so a child can never block on a full
pipe), ``send_signal``, ``terminate`` and ``kill``; and ``wait_for_output`` to wait until
the child has printed a line.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "cli.py"

# What a ``cli.py search`` imports before and while it runs its first trial. A module that
# is missing (renamed in the package, say) is simply imported later by the child.
WARM_MODULES = [
    "cli",
    "search",
    "search.engine",
    "search.store",
    "search.study",
    "search.reporting",
    "search.retrain",
    "search.ablation",
    "torch",
    "torch._dynamo",
    "torch.optim",
    "numpy",
    "optuna",
    "optuna.visualization",
    "plotly",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "sklearn.metrics",
    "sklearn.model_selection",  # a cold split cache computes with it
    "matplotlib.pyplot",
    "sqlalchemy",
    "psycopg",
]


# --- the server ------------------------------------------------------------------------
def _serve(path: str) -> dict:
    """Answer requests until stdin closes (pytest is gone) or says stop; returns only in a
    forked child, with that child's request."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in WARM_MODULES:
        try:
            __import__(name)
        except Exception:  # warming up is an optimisation only
            pass
    try:  # plotly reads its validators' tables on first use (each search draws its plots)
        import plotly.graph_objects as go

        go.Figure(layout={"title": "warm-up"})
    except Exception:  # likewise
        pass
    import gc

    gc.freeze()  # the children's collections (and exits) skip what the imports made
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select(timeout=0.02):
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 1024):  # pytest ended (or said stop)
                    os.unlink(path)
                    os._exit(0)
                continue
            conn, _ = listener.accept()
            try:
                payload, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
                request = {**json.loads(payload), "fds": fds}
            except (OSError, ValueError):  # the test side went away mid-request
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:  # the child: drop the server's sockets, run the request
                selector.close()
                listener.close()
                conn.close()
                for other in children.values():
                    other.close()
                return request
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            try:
                conn.send(str(pid).encode())
            except OSError:  # the test side went away: the child's status goes nowhere
                pass
        while children:  # report each child that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    conn.send(str(status).encode())
                except OSError:  # the test side closed its end
                    pass
                conn.close()


def _run_child(request: dict) -> None:
    """Become ``python cli.py ARGS`` (or ``python -c CODE``) in ``cwd`` with ``env``."""
    out, err = request["fds"]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (devnull, out, err):
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own start-up state
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import random

    random.seed()  # a new process draws new random numbers; a forked one would repeat
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if request["code"] is not None:
        sys.argv = ["-c"]
        sys.path[0] = ""
        exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
        sys.exit(0)
    sys.argv = [str(CLI), *request["args"]]
    sys.path[0] = str(ROOT)
    import cli

    sys.exit(cli.main())


# --- the test side ---------------------------------------------------------------------
class Forked:
    """A child of the fork server, used as ``subprocess.Popen`` is."""

    def __init__(
        self, server: _Server, args: list[str], code: str | None, cwd: Path, env: dict
    ) -> None:
        self.args = args if code is None else ["-c", code]
        self.returncode: int | None = None
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._conn.connect(server.path)
        request = json.dumps({"args": args, "code": code, "cwd": str(cwd), "env": env})
        socket.send_fds(self._conn, [request.encode()], [self._out.fileno(), self._err.fileno()])
        self.pid = int(self._conn.recv(64))
        _children.append(self)
        try:  # through a pidfd, a signal can never reach another process that reused the pid
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except ProcessLookupError:  # it has ended already
            self._pidfd = None

    def _status(self, timeout: float | None) -> bool:
        if self.returncode is not None:
            return True
        self._conn.settimeout(timeout)
        try:
            data = self._conn.recv(64)
        except (TimeoutError, BlockingIOError):
            return False
        if not data:
            raise RuntimeError(f"fork server died while {self.args} ran")
        self.returncode = os.waitstatus_to_exitcode(int(data))
        self._conn.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return True

    def poll(self) -> int | None:
        self._status(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._status(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def output(self) -> tuple[str, str]:
        """What the child has written so far to stdout and stderr (its file offsets are
        left alone: ``pread``)."""

        def read(fh) -> str:
            size = os.fstat(fh.fileno()).st_size
            return os.pread(fh.fileno(), size, 0).decode("utf-8", errors="replace")

        return read(self._out), read(self._err)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """As ``subprocess.run(timeout=...)``: a child still running at the timeout is
        killed (and reaped) before ``TimeoutExpired`` is raised, so no test leaves it."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        return self.output()

    def wait_for_output(self, text: str, timeout: float = 120) -> None:
        """Wait until the child has printed ``text`` on stdout; fail if it ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.output()[0]:
            if self.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.args} never printed {text!r}: exit {self.returncode}, {self.output()}"
                )
            time.sleep(0.01)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:  # ended meanwhile
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Server:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="forkserver-")
        self.path = os.path.join(self._dir.name, "socket")
        self.log = Path(self._dir.name) / "server.log"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["OMP_NUM_THREADS"] = "1"
        with self.log.open("w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, self.path],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        if self._proc.stdout.readline().strip() != "ready":
            self._proc.wait(timeout=30)
            raise RuntimeError(f"the fork server did not start: {self.log.read_text()}")

    def close(self) -> None:
        for child in _children:  # a test that failed or hung may have left one running
            child.kill()
        if self._proc.poll() is None:
            self._proc.stdin.close()  # the server exits when its stdin closes
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()


_server: _Server | None = None
_children: list[Forked] = []  # every child started, killed (if alive) when the server closes


def _the_server() -> _Server:
    global _server
    if _server is None or _server._proc.poll() is not None:
        _server = _Server()
        atexit.register(_server.close)
    return _server


def start() -> None:
    """Start the server now (its imports take a few seconds) rather than on first use."""
    _the_server()


def spawn_cli(args: list[str], cwd: Path, env: dict) -> Forked:
    """``python cli.py *args`` in ``cwd`` with exactly the environment ``env``."""
    return Forked(_the_server(), [str(a) for a in args], None, cwd, env)


def spawn_code(code: str, cwd: Path, env: dict) -> Forked:
    """``python -c code`` in ``cwd`` with exactly the environment ``env``."""
    return Forked(_the_server(), [], code, cwd, env)


if __name__ == "__main__":
    sys.path[0] = str(ROOT)  # as for ``python cli.py``: the repository, not tests/
    _run_child(_serve(sys.argv[1]))
