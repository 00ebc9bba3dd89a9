"""One home for the run state of every command (``CIFAR_SEARCH_HOME``, else the project
root), whatever the current folder: a search started elsewhere writes no ``./mlruns``
there, and ``studies`` and ``best`` see its trials from any folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from in_process import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_finds_the_state_in_the_home_from_any_folder(tmp_path, study_file):
    home, elsewhere, third = tmp_path / "home", tmp_path / "elsewhere", tmp_path / "third"
    for folder in (home, elsewhere, third):
        folder.mkdir()
    study = study_file(study={"n_trials": 2})
    env = {"CIFAR_SEARCH_HOME": str(home)}
    result = run_cli("search", "--study", study, "--no-retrain", cwd=elsewhere, env=env)
    assert result.exit_code == 0, result.output
    assert f"home {home}" in result.output  # said where the state goes
    assert (home / "mlruns" / "tiny.journal").exists()
    assert not (elsewhere / "mlruns").exists()

    best = run_cli("best", "--study", study, "--format", "json", cwd=third, env=env)
    assert best.exit_code == 0, best.output
    assert json.loads(best.stdout)["trial"] in (0, 1)
    listing = run_cli("studies", cwd=third, env=env)
    assert listing.stdout.startswith(f"home {home} ")
    assert not (third / "mlruns").exists()


def test_without_a_home_set_the_project_root_is_the_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CIFAR_SEARCH_HOME"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "studies"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"home {ROOT} ")
    assert not (tmp_path / "mlruns").exists()
