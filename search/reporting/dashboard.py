"""``cli.py dashboard``: optuna-dashboard on a study's storage, opened through the same
storage code (and journal lock) as the workers."""

from __future__ import annotations

import socket
from collections.abc import Callable

from search.errors import ConfigError
from search.study import StudySpec


def serve_dashboard(
    spec: StudySpec,
    storage_url: str | None,
    host: str,
    port: int,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve until Ctrl-C. A port that cannot be bound is a ``ConfigError`` (one line), found
    before the web server prints its banner."""
    import optuna_dashboard

    from search.store import open_storage

    store = open_storage(spec.name, storage_url, create=False)
    try:
        with socket.socket() as probe:
            probe.bind((host, port))
    except OSError as exc:  # port in use, address not available
        raise ConfigError(
            f"cannot serve the dashboard on {host}: {exc.strerror or exc}", key="--port", value=port
        ) from None
    echo(
        f"optuna-dashboard for study {spec.name}: http://{host}:{port}/dashboard/ (Ctrl-C to stop)"
    )
    optuna_dashboard.run_server(store, host=host, port=port)
