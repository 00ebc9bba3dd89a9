"""optuna-dashboard's notes: after the final retrain (written by `search` and `retrain`) and
after an ablation (written by `ablate`), read back from the study's storage as the
dashboard reads them."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from in_process import isolated, run_cli
from optuna_dashboard import get_note

from search.engine import open_study
from search.store import TRIAL_TAG, Tracker, sqlite_uri
from search.study import load_study

pytestmark = pytest.mark.xdist_group("searched")


def _study_and_final(work: Path) -> tuple[optuna.Study, object]:
    with isolated(work, {"MLFLOW_TRACKING_URI": sqlite_uri(work / "mlruns" / "mlflow.db")}):
        spec = load_study(str(work / "tiny.toml"))
        study = open_study(spec, None, create=False)
        final = Tracker("tiny", create=False).find_runs("final")[0]
    return study, final


def test_search_leaves_the_final_result_in_the_dashboard_note(searched):
    study, final = _study_and_final(searched)
    note = get_note(study)
    trial = final.data.tags[TRIAL_TAG]
    assert f"trial **{trial}** retrained on train+validation for 2 epochs" in note
    mean = 100 * final.data.metrics["test_accuracy_mean"]
    assert f"**test accuracy {mean:.2f}% (1 seed)**" in note
    assert final.info.run_id in note and "mlflow ui --backend-store-uri" in note
    retrained = next(t for t in study.trials if t.number == int(trial))
    trial_note = get_note(optuna.Trial(study, retrained._trial_id))
    assert f"test accuracy **{mean:.2f}%" in trial_note and final.info.run_id in trial_note
    others = [t for t in study.trials if t.number != int(trial)]
    assert all(get_note(optuna.Trial(study, t._trial_id)) == "" for t in others)


def test_ablate_adds_its_verdicts_to_the_note(searched_copy):
    result = run_cli("ablate", "--study", "tiny.toml", "--seeds", "0,1", cwd=searched_copy)
    assert result.exit_code == 0, result.output
    study, final = _study_and_final(searched_copy)
    note = get_note(study)
    assert "test accuracy" in note and final.info.run_id in note  # the final result stays
    assert "### Ablation" in note and "| narrow |" in note and "verdict" in note
    uri = {"MLFLOW_TRACKING_URI": sqlite_uri(searched_copy / "mlruns" / "mlflow.db")}
    with isolated(searched_copy, uri):
        ablation = Tracker("tiny", create=False).find_runs("ablation")[0]
    assert ablation.info.run_id in note


def test_an_ablation_only_study_has_no_note_to_write(study_file, tmp_path):
    path = study_file(
        "fixed_only",
        space={"optim.lr": None},
        ablation=[{"name": "narrow", "set": {"model.width": 0.125}}],
        retrain={"epochs": 1},
    )
    result = run_cli("ablate", "--study", path, "--seeds", "0,1", "--on", "val", cwd=tmp_path)
    assert result.exit_code == 0, result.output  # nothing searched: no Optuna study, no note
    assert not (tmp_path / "mlruns" / "fixed_only.journal").exists()
