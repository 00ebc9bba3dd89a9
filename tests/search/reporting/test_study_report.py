"""`report`: a folder with markdown and valid PNGs, from a real (tiny) searched study: a
copy of the one the session searched through the command line (``searched``, conftest.py),
whose ablation this test adds."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from search.ablation import run_ablation
from search.reporting import write_files, write_report
from search.store import sqlite_uri
from search.study import load_study


@pytest.mark.xdist_group("searched")  # with the other users of the session's searched study
def test_report_folder_has_every_section_and_valid_images(searched_copy, tmp_path, monkeypatch):
    # searched and retrained (the final retrain) by `cli.py search` in this folder
    monkeypatch.chdir(searched_copy)
    monkeypatch.setenv("CIFAR_SEARCH_HOME", str(searched_copy))  # its mlruns/ there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    spec = load_study(str(searched_copy / "tiny.toml"))
    run_ablation(spec, seeds=[0, 1], artifacts=write_files)

    md = write_report(spec, tmp_path / "report").read_text()
    for section in (
        "Optimization history",
        "Parameter importance",
        "Parallel coordinates",
        "Best trial's learning curves",
        "Final retrain (test split)",
        "Ablation",
    ):
        assert f"## {section}" in md, section
    pngs = {
        "history.png",
        "importance.png",
        "parallel.png",
        "best_curves.png",
        "confusion_matrix.png",
        "ablation.png",
    }
    for name in pngs:
        assert f"({name})" in md
        with Image.open(tmp_path / "report" / name) as image:
            image.verify()
        with Image.open(tmp_path / "report" / name) as image:
            assert image.size[0] >= 300 and image.size[1] >= 200
            # not a blank canvas: a real plot has many distinct colours
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_a_kfold_study_report_draws_each_folds_curves(study_file, tmp_path, monkeypatch):
    # k-fold trials log fold0.val_acc, fold1.val_acc, ... (not val_acc): the best trial's
    # curves are drawn from those, one line per fold and curve, over the fold's own epochs
    from search import engine
    from search.reporting.study_report import trial_curves

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    spec = load_study(
        str(study_file("folds", study={"n_trials": 2}, fixed={"data.kfold": 2, "optim.epochs": 2}))
    )
    study = engine.run_search(spec, engine.SearchOptions()).study
    md = write_report(spec, tmp_path / "report").read_text()
    assert "## Best trial's learning curves" in md
    with Image.open(tmp_path / "report" / "best_curves.png") as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    from search.store import Tracker

    best = study.best_trial
    curves = trial_curves(Tracker("folds"), best.user_attrs["mlflow_run_id"], best)
    assert sorted({key.split(".")[0] for key in curves}) == ["fold0", "fold1"]
    assert [m.step for m in curves["fold1.val_acc"]] == [1, 2]  # the fold's own epochs
