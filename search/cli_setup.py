"""How ``cli.py`` runs as a process: its click group class (a user error is one line on
stderr and exit code 2), the process-wide settings every command starts with
(``configure_libraries``) and the config that ``train`` and ``check-fast-path`` assemble
from a file, options and ``--set``. The options themselves are in ``cli_args``.

Light on purpose, like ``cli_args``: click and ``search.errors`` at module level only."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from search.errors import ConfigError

if TYPE_CHECKING:
    from search.config import TrialConfig


class Commands(click.Group):
    """Turns user errors into one line on stderr and exit code 2, never a traceback: our
    own (``ConfigError``) and click's usage errors (a value out of range, an unknown
    option), which click would print as three lines of usage and error.

    Run as the program (``python cli.py``, ``cifar-search``: arguments from ``sys.argv``),
    it ends the process with ``exit_now``; called with arguments (click's test runner, a
    script), it returns or raises ``SystemExit`` as any click group does."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **options: Any) -> Any:
        if args is not None or not options.get("standalone_mode", True):
            return super().main(args, *rest, **options)
        try:
            super().main(None, *rest, **options)
        except SystemExit as done:
            exit_now(done.code)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(2)


def exit_now(code: object) -> NoReturn:
    """End the process as ``sys.exit(code)`` does, without the interpreter's tear-down:
    freeing the modules of torch, MLflow and their dependencies takes 1-2 s after a
    command's last line (``benchmarks/startup.py``), in every command and every worker
    process, and does nothing a finished command needs. What ending does need still
    happens, in Python's own order and by its own functions: threading's shutdown (thread
    pools told to stop, as MLflow's downloads and torch.compile leave them, then the other
    non-daemon threads joined), the exit handlers (logging flushed, temporary folders
    removed, MLflow's own), stdout and stderr flushed. A signal that arrives meanwhile does
    not change the finished command's status, as in Python's own exit."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    with contextlib.suppress(KeyboardInterrupt):
        threading._shutdown()  # what Py_Finalize calls first; only private in name
    with contextlib.suppress(KeyboardInterrupt):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`cli.py ... | head`)
            stream.flush()
    os._exit(status & 0xFF)


def configure_libraries() -> None:
    """What every command starts with (the group's callback): warnings as one line, like our
    errors; Optuna quiet; MLflow failing fast, without progress bars or INFO lines."""
    import warnings

    import optuna

    # one line per warning, like our errors, instead of Python's two-line format
    warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(
        f"warning: {message}", err=True
    )
    # We print our own progress and keep failed trials' tracebacks in MLflow, so Optuna's
    # per-trial warnings (a traceback per failed trial) would only repeat them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # MLflow retries an unreachable server for minutes by default; fail within ~a minute.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm noise
    # no "View run ... at: http://..." for every run ended on a tracking server
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # The tool's output is its own: no "Creating initial MLflow database tables..." on a
    # first run. Read by MLflow when it is imported (later, by the commands that need it),
    # and inherited by the worker processes of `search --workers`.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@contextlib.contextmanager
def ending_cleanly_on_signals(message: Callable[[], str]) -> Iterator[None]:
    """The block of a command that ends cleanly on Ctrl-C, SIGTERM or SIGUSR1: training in it
    saves its checkpoint at the next batch boundary (``search.interrupts``), then the
    command prints ``message()`` as one line on stderr and exits with the signal's code
    (130, 143 or 138), within the interrupt module's grace period."""
    from search import interrupts

    interrupts.exit_within()
    try:
        yield
    except KeyboardInterrupt:
        click.echo(message(), err=True)
        sys.exit(interrupts.exit_code())


def trial_config(
    options: Mapping[str, Any], assignments: Sequence[str] = (), config_file: str | None = None
) -> TrialConfig:
    """The config that ``train`` and ``check-fast-path`` run: ``config_file`` (or the
    defaults), then the options given (flat keys; ``None`` means not given), then ``--set``."""
    from search.config import TrialConfig, parse_assignments

    cfg = TrialConfig.from_file(config_file) if config_file else TrialConfig()
    cfg = cfg.with_overrides({k: v for k, v in options.items() if v is not None})
    return cfg.with_overrides(parse_assignments(assignments))
