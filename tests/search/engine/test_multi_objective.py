"""A multi-objective study on digits, end to end through the command line: search (with
its final retrain) -> best -> retrain -> ablate -> report -> studies, and the dashboard's
API on it. Accuracy against parameters and inference time, as the shipped
``cifar100-efficiency`` study, on a tiny ResNet20 for one epoch per trial."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from in_process import isolated, run_cli
from PIL import Image
from tiny_study import write_study

from search.config import TrialConfig
from search.engine import open_study
from search.reporting import study_rows
from search.store import TRIAL_TAG, Tracker, sqlite_uri
from search.study import load_study
from search.study.objectives import pareto_front, preferred

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multi_objective")]
MEASURES = ["val_acc", "params", "inference_ms"]
STUDY = {
    "dataset": "digits",
    "n_trials": 5,
    "objectives": [
        {"measure": "val_acc", "direction": "maximize"},
        {"measure": "params", "direction": "minimize"},
        {"measure": "inference_ms", "direction": "minimize"},
    ],
    "pruner": None,
}
FIXED = {
    "model.name": "resnet20",
    "model.width": None,
    "optim.epochs": 1,
    "optim.batch_size": 128,
    "data.synthetic_size": None,
    "data.synthetic_classes": None,
}
SPACE = {"model.width": {"type": "categorical", "choices": [0.125, 0.25]}}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The searched and retrained study: ``multi.toml``, ``mlruns/``, ``search.log``."""
    folder = tmp_path_factory.mktemp("multi")
    write_study(
        folder,
        "multi",
        study=STUDY,
        fixed=FIXED,
        space=SPACE,
        retrain={"epochs": 1, "seeds": [0, 1]},
        ablation=[{"name": "no_weight_decay", "set": {"optim.weight_decay": 0.0}}],
    )
    result = run_cli("search", "--study", folder / "multi.toml", cwd=folder)
    assert result.exit_code == 0, result.output
    (folder / "search.log").write_text(result.stdout)
    return folder


def stored(work: Path) -> optuna.Study:
    with isolated(work):
        return open_study(load_study(str(work / "multi.toml")), None, create=False)


def complete(study: optuna.Study) -> list[tuple[int, tuple]]:
    states = (optuna.trial.TrialState.COMPLETE,)
    return [(t.number, tuple(t.values)) for t in study.get_trials(states=states)]


def tracker_in(work: Path) -> Tracker:
    os.environ["MLFLOW_TRACKING_URI"] = sqlite_uri(work / "mlruns" / "mlflow.db")
    return Tracker("multi", create=False)


def test_search_records_every_objective(work: Path):
    study = stored(work)
    assert [d.name.lower() for d in study.directions] == ["maximize", "minimize", "minimize"]
    assert study.metric_names == MEASURES  # what optuna-dashboard labels its axes with
    assert study.user_attrs["study.objectives"] == (
        "val_acc:maximize,params:minimize,inference_ms:minimize"
    )
    trials = complete(study)
    assert len(trials) == 5
    with isolated(work):
        tracker = tracker_in(work)
        parent = tracker.find_runs("study")[0]
        assert parent.data.tags["study.objectives"] == study.user_attrs["study.objectives"]
        runs = {int(r.data.tags[TRIAL_TAG]): r for r in tracker.find_runs("trial")}
    for number, values in trials:
        metrics = runs[number].data.metrics
        assert [metrics[f"objective.{m}"] for m in MEASURES] == pytest.approx(values)
        assert "objective" not in metrics  # no single value pretends to be the objective
        assert metrics["objective.params"] == metrics["n_params"]
        width = runs[number].data.params["model.width"]
        model = TrialConfig.from_flat({"model.name": "resnet20", "model.width": width})
        assert values[2] > 0 and model.model.width in (0.125, 0.25)
    # the narrower model has fewer parameters: the cost measure is the model's, not noise
    by_width = {runs[n].data.params["model.width"]: v[1] for n, v in trials}
    if len(by_width) == 2:
        assert by_width["0.125"] < by_width["0.25"]
    log = (work / "search.log").read_text()
    assert "Pareto front:" in log and "params" in log and "inference_ms" in log


def test_the_final_retrain_took_the_default_pick(work: Path):
    study = stored(work)
    directions = ["maximize", "minimize", "minimize"]
    pick = preferred(complete(study), directions)
    assert pick in [t.number for t in study.best_trials]
    with isolated(work):
        finals = tracker_in(work).find_runs("final")
    assert [int(r.data.tags[TRIAL_TAG]) for r in finals] == [pick]
    log = (work / "search.log").read_text()
    assert f"final (trial {pick}): test accuracy" in log


def test_best_prints_the_front_and_exports_the_pick_or_the_chosen_trial(work: Path, tmp_path):
    study = stored(work)
    front = sorted(t.number for t in study.best_trials)
    pick = preferred(complete(study), ["maximize", "minimize", "minimize"])

    result = run_cli("best", "--study", work / "multi.toml", cwd=work)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"# Pareto front: {len(front)} of 5 complete trials" in text
    rows = [line for line in text.splitlines() if line.startswith("# ") and line.endswith(" ms")]
    assert sorted(int(r.split()[2 if r.startswith("# *") else 1]) for r in rows) == front
    assert f"# trial {pick} (MLflow run" in text
    config = TrialConfig.from_flat(study.trials[pick].user_attrs["config"])
    assert TrialConfig.from_toml_text(text) == config  # the file reruns the trial

    other = next(n for n, _ in complete(study) if n != pick)
    result = run_cli(
        "best", "--study", work / "multi.toml", "--trial", other, "--format", "json", cwd=work
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["trial"] == other
    assert [p["trial"] for p in doc["pareto_front"]] == [
        n for n, _ in pareto_front(complete(study), ["maximize", "minimize", "minimize"])
    ]
    assert [o["measure"] for o in doc["objectives"]] == MEASURES
    assert doc["scores"]["params"] == study.trials[other].values[1]

    out = tmp_path / "chosen.toml"
    result = run_cli(
        "best", "--study", work / "multi.toml", "--trial", other, "--output", out, cwd=work
    )
    assert result.exit_code == 0 and f"* trial {other}: chosen with --trial" in result.stdout
    assert out.read_text().startswith("# configuration of study 'multi'")

    result = run_cli("best", "--study", work / "multi.toml", "--trial", 99, cwd=work)
    assert result.exit_code == 2 and "--trial = 99: no COMPLETE trial" in result.stderr


def test_dashboard_shows_both_directions_and_the_front(work: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["CIFAR_SEARCH_HOME"] = str(work)
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "dashboard", "--study", "multi.toml"]
        + ["--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        summaries = _get(server, f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        (summary,) = summaries
        assert summary["directions"] == ["maximize", "minimize", "minimize"]
        detail = _get(server, f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert detail["directions"] == ["maximize", "minimize", "minimize"]
    assert detail["objective_names"] == MEASURES
    study = stored(work)
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(
        t.number for t in study.best_trials
    )


def _get(server: subprocess.Popen, url: str) -> dict:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()
            time.sleep(0.3)
    raise AssertionError(f"no answer from {url}")


def test_retrain_and_ablate_take_the_chosen_trial(work: Path):
    study = stored(work)
    pick = preferred(complete(study), ["maximize", "minimize", "minimize"])
    other = next(n for n, _ in complete(study) if n != pick)
    result = run_cli(
        "retrain", "--study", work / "multi.toml", "--trial", other, "--seeds", "0", cwd=work
    )
    assert result.exit_code == 0, result.output
    assert f"final (trial {other}): test accuracy" in result.stdout

    result = run_cli(
        "ablate", "--study", work / "multi.toml", "--trial", other, "--seeds", "0,1",
        "--on", "val", cwd=work,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"trial {other} (from MLflow)" in result.stdout

    result = run_cli("ablate", "--study", work / "multi.toml", "--seeds", "0,1", cwd=work)
    assert result.exit_code == 0, result.output
    assert f"best trial {pick} (from MLflow)" in result.stdout


def test_report_draws_the_front_and_studies_counts_it(work: Path, tmp_path: Path):
    result = run_cli("report", "--study", work / "multi.toml", "--out", tmp_path / "r", cwd=work)
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    study = stored(work)
    front = pareto_front(complete(study), ["maximize", "minimize", "minimize"])
    assert "## Pareto front" in md and f"{len(front)} of 5 complete trials" in md
    table = md.split("## Pareto front")[1].split("```")[1]
    rows = [line.split() for line in table.strip().splitlines()[2:]]
    assert [int(r[1] if r[0] == "*" else r[0]) for r in rows] == [n for n, _ in front]
    pick = preferred(complete(study), ["maximize", "minimize", "minimize"])
    pick_row = next(line for line in table.splitlines() if line.startswith("*"))
    assert int(pick_row.split()[1]) == pick and "± " in pick_row and "(2 seeds)" in pick_row
    with Image.open(tmp_path / "r" / "pareto.png") as image:
        assert image.size[0] >= 600  # one panel per cost measure
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    for section in ("Optimization history", "Parameter importance", "Final retrain (test split)"):
        assert f"## {section}" in md

    with isolated(work):
        (row,) = study_rows(None, work)
    assert row[0] == "multi" and row[4] == "5/5" and row[5] == f"front of {len(front)}"
