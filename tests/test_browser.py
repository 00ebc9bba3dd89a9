"""What a user sees in a browser: the searched study's note in optuna-dashboard, and the
MLflow run the note links to, opened in MLflow's own UI. Real server processes
(`cli.py dashboard`, `mlflow ui`), pages rendered by headless Chromium (`--dump-dom`: the
DOM after the pages' JavaScript ran), and checks on the rendered text, not on the HTML the
servers send (both are single-page apps: that HTML holds no data at all).

MLflow 3's UI opens an experiment in its GenAI view (traces, token usage) unless the page
asks for the model-training view (`?workflowType=machine_learning`, which the note's links
carry); the experiment's `mlflow.experimentKind` tag is checked through the UI server's
REST API, since MLflow 3.17's pages do not read it.

Chromium is a system package (Debian: `chromium`). Without it these tests skip, saying so,
except where ``CIFAR_SEARCH_REQUIRE_BROWSER=1`` (set by `.ci/run`, which installs Chromium):
there a missing browser is a failure, so CI always runs them. The study is the
session's searched study (conftest.py), only read: the MLflow server runs in the test's own
folder, on the study's database."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from search.reporting.notes import NOTE_TITLE
from search.store import Tracker, sqlite_uri
from search.store.tracker import EXPERIMENT_KIND_TAG, MODEL_TRAINING

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("searched")]

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 75  # seconds for a server to answer: both start together on busy cores
# the side navigation of MLflow's two views of an experiment
MODEL_TRAINING_NAV = "Model registry"
GENAI_NAV = ("Observability", "Token Usage")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REQUIRE_BROWSER = "CIFAR_SEARCH_REQUIRE_BROWSER"  # "1" in CI: a missing browser fails


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing = "headless Chromium is missing: install the Debian package `chromium`"
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{missing} ({REQUIRE_BROWSER}=1: CI must run the browser tests)")
        pytest.skip(f"{missing} to run the browser tests")
    return found


def _start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server in a process group of its own (`mlflow ui` starts uvicorn as a child), its
    output in ``log`` (a pipe nobody reads would fill up and stall it)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(server: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _get_json(url: str, server: subprocess.Popen, log: Path, deadline: float) -> dict:
    """``url``'s JSON once the server answers it; fails when the server dies or the time is up."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            tail = log.read_text(errors="replace")[-3000:]
            assert server.poll() is None, f"server exited: {tail}"
            assert time.time() < deadline, f"no answer from {url} after {START_TIMEOUT} s: {tail}"
            time.sleep(0.5)


def _page(chromium: str, url: str, profile: Path, expected: list[str]) -> tuple[str, str]:
    """(DOM, visible text) of ``url`` rendered by headless Chromium in a new profile (no
    view remembered from an earlier page). Loaded again, up to 3 times, while some
    ``expected`` text is missing: on busy cores a page's data can come after the dump."""
    for attempt in range(3):
        dom = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                f"--user-data-dir={profile}-{attempt}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        ).stdout
        visible = re.sub(r"(?is)<(script|style)\b[^>]*>.*?</\1>", " ", dom)
        text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", visible)))
        if all(e in text for e in expected):
            break
    return dom, text


def test_the_note_and_its_mlflow_link_in_a_browser(searched, tmp_path):
    chromium = _chromium()
    tracker = Tracker("tiny", sqlite_uri(searched / "mlruns" / "mlflow.db"), create=False)
    final = tracker.find_runs("final", order_by=["attributes.start_time DESC"])[0]
    run_id, run_name = final.info.run_id, final.info.run_name
    accuracy = f"test accuracy {100 * final.data.metrics['test_accuracy_mean']:.2f}%"
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=1000)
    trial_names = {r.info.run_name for r in runs if r.data.tags.get("cifar_search.kind") == "trial"}
    assert run_name and trial_names, "the searched study has a final run and trial runs"

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["CIFAR_SEARCH_HOME"] = str(searched)
    ml_env = {
        **env,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner and its 8 workers
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    dash_port, ml_port = _free_port(), _free_port()
    dash_log, ml_log = tmp_path / "dashboard.log", tmp_path / "mlflow-ui.log"
    started = time.time()
    servers = []
    try:
        servers.append(
            _start(
                [sys.executable, str(ROOT / "cli.py"), "dashboard"]
                + ["--study", str(searched / "tiny.toml"), "--port", str(dash_port)],
                searched,
                env,
                dash_log,
            )
        )
        # the command the note gives, on a free port; in this test's folder, so that
        # nothing the server might write lands in the shared study's
        mlflow = Path(sys.executable).with_name("mlflow")
        servers.append(
            _start(
                [str(mlflow), "ui", "--backend-store-uri", tracker.uri]
                + ["--port", str(ml_port), "--workers", "1"],
                tmp_path,
                ml_env,
                ml_log,
            )
        )
        dash, ml = servers
        deadline = started + START_TIMEOUT
        studies = _get_json(f"http://127.0.0.1:{dash_port}/api/studies", dash, dash_log, deadline)
        ml_api = f"http://127.0.0.1:{ml_port}/ajax-api/2.0/mlflow"
        _get_json(f"{ml_api}/experiments/search?max_results=10", ml, ml_log, deadline)

        # (a) the study's note in optuna-dashboard
        (study_id,) = [
            s["study_id"] for s in studies["study_summaries"] if s["study_name"] == "tiny"
        ]
        note_url = f"http://127.0.0.1:{dash_port}/dashboard/studies/{study_id}/note"
        heading = NOTE_TITLE.lstrip("# ")
        dom, text = _page(chromium, note_url, tmp_path / "chrome-note", [heading])
        assert "tiny" in text, text
        assert heading in text, f"no note on the study's page: {text}"
        assert accuracy in text, f"{accuracy!r} (MLflow's) not in the note: {text}"
        assert run_id in text and f"mlflow ui --backend-store-uri {tracker.uri}" in text, text

        # (b) the note's link to the final run, on the port this test's `mlflow ui` has
        links = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', dom) if run_id in h]
        assert links, f"the note links to no page of run {run_id}: {text}"
        link = urllib.parse.urlsplit(links[0])
        assert link.netloc == "127.0.0.1:5000", links[0]  # mlflow ui's default port
        run_url = link._replace(netloc=f"127.0.0.1:{ml_port}").geturl()
        wanted = [run_name, MODEL_TRAINING_NAV]
        _, run_page = _page(chromium, run_url, tmp_path / "chrome-run", wanted)
        assert run_name in run_page and run_id in run_page, run_page
        assert "test_accuracy_mean" in run_page and "tiny" in run_page, run_page
        assert MODEL_TRAINING_NAV in run_page, f"not the model-training view: {run_page}"
        assert not any(nav in run_page for nav in GENAI_NAV), f"the GenAI view: {run_page}"

        # the same view of the experiment: its runs table, every run of the study counted
        runs_url = re.sub(r"/runs/[0-9a-f]+", "", run_url)
        assert f"#/experiments/{tracker.experiment_id}?" in runs_url, runs_url
        matching = f"{len(runs)} matching runs"
        _, runs_page = _page(chromium, runs_url, tmp_path / "chrome-runs", [matching])
        assert matching in runs_page and "tiny" in runs_page, runs_page
        assert MODEL_TRAINING_NAV in runs_page, f"not the model-training view: {runs_page}"
        assert not any(nav in runs_page for nav in GENAI_NAV), f"the GenAI view: {runs_page}"

        # the experiment's kind, as the UI server reports it
        query = urllib.parse.urlencode({"experiment_name": "tiny"})
        got = _get_json(f"{ml_api}/experiments/get-by-name?{query}", ml, ml_log, time.time() + 30)
        experiment = got["experiment"]
        assert experiment["experiment_id"] == tracker.experiment_id
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        kind = f"{EXPERIMENT_KIND_TAG}={MODEL_TRAINING}"
        assert tags.get(EXPERIMENT_KIND_TAG) == MODEL_TRAINING, f"no tag {kind}: {tags}"
    finally:
        for server in servers:
            _stop(server)
