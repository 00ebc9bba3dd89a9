"""Ablations end to end on tiny data, with real MLflow and real training."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from PIL import Image

from search.ablation import BASELINE, leave_one_out, run_ablation, same_run
from search.config import TrialConfig
from search.errors import ConfigError
from search.reporting.ablation_table import table_rows, write_files
from search.store import sqlite_uri
from search.study import load_study

# The tiny study (tests/tiny_study.py) with nothing searched: its fixed config is the
# baseline. Sampler, seed and pruner left to their defaults.
ABLATION_STUDY = {
    "study": {"n_trials": 1, "sampler": None, "seed": None, "pruner": None},
    "space": {"optim.lr": None},
    "retrain": {"epochs": 2},
    "ablation": [
        {"name": "narrow", "set": {"model.width": 0.125}},
        {
            "name": "no_dropout",
            "description": "already 0: same config as the baseline",
            "set": {"model.dropout": 0.0},
        },
    ],
}


@pytest.fixture
def spec(tmp_path, monkeypatch, study_file):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    return load_study(str(study_file("abl", **ABLATION_STUDY)))


def test_paired_runs_reuse_and_outputs(spec, tmp_path):
    first = run_ablation(spec, seeds=[0, 1], artifacts=write_files)
    assert first.base_label == "the study file's fixed config"
    assert [v.name for v in first.variants] == [BASELINE, "narrow", "no_dropout"]
    assert len(first.records) == 6
    # no_dropout resolves to the baseline's config: its runs are the baseline's, reused
    assert first.trained == 4
    for seed in (0, 1):  # paired: every variant has every seed
        assert {r.variant for r in first.records if r.seed == seed} == {
            BASELINE,
            "narrow",
            "no_dropout",
        }
    narrow = next(c for c in first.comparisons if c.variant == "narrow")
    assert narrow.n == 2
    assert narrow.verdict.startswith("too few seeds (n=2)")  # never a yes or no from 2 seeds
    rows = {r[0]: r for r in table_rows(first)}
    assert rows["no_dropout"][8] == "(same config as baseline)"
    assert len(rows["narrow"]) == 12

    again = run_ablation(spec, seeds=[0, 1])
    assert again.trained == 0
    assert [r.accuracy for r in again.records] == [r.accuracy for r in first.records]
    more = run_ablation(spec, seeds=[0, 1, 2], variant_names=["narrow"])
    assert more.trained == 2 and len(more.records) == 6
    forced = run_ablation(spec, seeds=[0], variant_names=["narrow"], force=True)
    assert forced.trained == 2

    runs = mlflow.search_runs(experiment_names=["abl"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("cifar_search.kind") == "ablation"]
    assert len(parents) == 4 and all(p.info.status == "FINISHED" for p in parents)
    children = [r for r in runs if r.data.tags.get("cifar_search.kind") == "ablation_run"]
    assert {r.data.tags["cifar_search.variant"] for r in children} == {BASELINE, "narrow"}
    assert all(TrialConfig.from_flat(r.data.params).model.name == "improved_cnn" for r in children)
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(first.parent_run_id)}
    assert {"ablation.md", "ablation.csv", "ablation.png"} <= names

    paths = write_files(first, tmp_path / "out")
    md = (tmp_path / "out" / "ablation.md").read_text()
    for column in (
        "95% CI",
        "t-test p",
        "Wilcoxon p",
        "Holm p",
        "verdict",
        "loss",
        "params",
        "train s",
    ):
        assert column in md
    image = Image.open(tmp_path / "out" / "ablation.png")
    image.verify()
    assert image.size[0] > 100 and len(paths) == 3


def test_validation_mode_is_separate_from_test_runs(spec):
    test = run_ablation(spec, seeds=[0], variant_names=["narrow"])
    val = run_ablation(spec, seeds=[0], variant_names=["narrow"], on="val")
    assert val.trained == 2 and test.trained == 2  # different split: nothing reused


def test_unknown_variant_and_base(spec, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'narrow'"):
        run_ablation(spec, seeds=[0], variant_names=["narow"])
    with pytest.raises(ConfigError, match="no COMPLETE trial"):
        run_ablation(spec, seeds=[0], base="best")


def test_leave_one_out_switches_off_each_enabled_component():
    base = TrialConfig.from_flat(
        {
            "model.name": "se_resnet18",
            "model.dropout": 0.3,
            "aug.preset": "full",
            "optim.label_smoothing": 0.1,
        }
    )
    names = [a.name for a in leave_one_out(base)]
    assert names == [
        "no_attention",
        "no_dropout",
        "no_crop",
        "no_flip",
        "no_jitter",
        "no_erasing",
        "no_label_smoothing",
        "no_weight_decay",
    ]
    plain = TrialConfig.from_flat(
        {"model.name": "resnet20", "aug.preset": "none", "optim.weight_decay": 0.0}
    )
    assert leave_one_out(plain) == []
    for a in leave_one_out(base):
        assert not same_run(base.with_overrides(a.overrides), base)
    assert same_run(plain, plain.with_overrides({"model.dropout": 0.0, "aug.flip": False}))


@pytest.mark.slow
def test_baseline_seeds_of_the_final_retrain_are_reused(study_file, tmp_path, monkeypatch):
    # the final retrain trains the best trial at the final epochs on train+validation and
    # tests it once per seed: exactly the ablation's baseline run on the test split
    from search import engine
    from search.reporting.ablation_table import ablation_run_line
    from search.retrain import retrain_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    path = study_file(
        "reuse",
        study={"n_trials": 2},
        retrain={"epochs": 2, "seeds": [0, 1]},
        ablation=[{"name": "narrow", "set": {"model.width": 0.125}}],
    )
    spec = load_study(str(path))
    study = engine.run_search(spec, engine.SearchOptions()).study
    final = retrain_study(spec, study)

    lines: list[str] = []
    outcome = run_ablation(
        spec,
        seeds=[0, 1, 2],
        on_run=lambda v, s, r: lines.append(ablation_run_line(v, s, r, "test")),
    )
    assert outcome.base_label == f"best trial {final.trial_number} (from MLflow)"
    baseline = {r.seed: r for r in outcome.of(BASELINE)}
    for seed in (0, 1):  # not trained again: the final run's own test results
        r = baseline[seed]
        assert r.reused and r.from_final and r.run_id == final.run_id
        assert r.accuracy == final.results[seed].final.accuracy
        assert r.loss == final.results[seed].final.loss
        assert r.per_class == tuple(final.results[seed].final.per_class_accuracy)
        assert r.n_params == final.results[seed].n_params
    assert not baseline[2].reused and not baseline[2].from_final
    assert outcome.trained == 4  # baseline seed 2 and the three narrow runs
    assert "baseline seed 0: test accuracy" in lines[0]
    assert lines[0].endswith("(reused from the final retrain)")
    runs = mlflow.search_runs(experiment_names=["reuse"], output_format="list")
    trained = [r for r in runs if r.data.tags.get("cifar_search.kind") == "ablation_run"]
    assert sorted((r.data.tags["cifar_search.variant"], r.data.tags["seed"]) for r in trained) == [
        (BASELINE, "2"),
        ("narrow", "0"),
        ("narrow", "1"),
        ("narrow", "2"),
    ]

    # the same computation: trained again (--force), seed 0 scores exactly what it scored
    forced = run_ablation(spec, seeds=[0], variant_names=["narrow"], force=True)
    again = forced.of(BASELINE)[0]
    assert not again.reused and again.accuracy == final.results[0].final.accuracy
    assert again.per_class == baseline[0].per_class
    # a validation ablation never takes test results from the final retrain
    val = run_ablation(spec, seeds=[0], variant_names=["narrow"], on="val")
    assert val.trained == 2 and not any(r.from_final for r in val.records)
