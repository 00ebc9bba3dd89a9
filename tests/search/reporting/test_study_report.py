"""`report`: a folder with markdown and valid PNGs, from a real (tiny) searched study."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from search.engine import loop as engine
from search.ablation import run_ablation
from search.reporting import write_report
from search.retrain import final_retrain
from search.study import load_study
from search.store import Tracker, sqlite_uri

STUDY = """
[study]
dataset = "synthetic"
n_trials = 4
sampler = "random"
pruner = "median"
[study.pruner_args]
n_startup_trials = 1
n_warmup_steps = 1
[space]
"optim.lr" = { type = "float", low = 1e-4, high = 0.2, log = true }
"model.dropout" = { type = "categorical", choices = [0.0, 0.3] }
[fixed]
"model.name" = "improved_cnn"
"model.width" = 0.25
"optim.epochs" = 2
"optim.batch_size" = 32
"aug.preset" = "none"
"runtime.device" = "cpu"
"data.synthetic_size" = 160
"data.synthetic_classes" = 4
[retrain]
epochs = 1
[[ablation]]
name = "narrow"
set = { "model.width" = 0.125 }
"""


def test_report_folder_has_every_section_and_valid_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    (tmp_path / "rep.toml").write_text(STUDY)
    spec = load_study(str(tmp_path / "rep.toml"))
    outcome = engine.run_search(spec, engine.SearchOptions())
    final_retrain(spec, outcome.study, Tracker("rep"), outcome.parent_run_id)
    run_ablation(spec, seeds=[0, 1])

    md = write_report(spec, tmp_path / "report").read_text()
    for section in ("Optimization history", "Parameter importance", "Parallel coordinates",
                    "Best trial's learning curves", "Final retrain (test split)", "Ablation"):
        assert f"## {section}" in md, section
    pngs = {"history.png", "importance.png", "parallel.png", "best_curves.png",
            "confusion_matrix.png", "ablation.png"}
    for name in pngs:
        assert f"({name})" in md
        with Image.open(tmp_path / "report" / name) as image:
            image.verify()
        with Image.open(tmp_path / "report" / name) as image:
            assert image.size[0] >= 300 and image.size[1] >= 200
            # not a blank canvas: a real plot has many distinct colours
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
