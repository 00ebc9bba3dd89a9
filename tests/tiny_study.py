"""The tiny study every end-to-end test searches, written as a TOML study file.

Seconds on a CPU: an ``improved_cnn`` at a quarter of its width, 200 synthetic images of
4 classes, 2 epochs, no augmentation, a random sampler over the learning rate. Tests change
what they need: ``write_study(folder, "name", study={"n_trials": 7}, fixed={...})`` merges
each table into these defaults, where a value of ``None`` removes a key (and a table left
empty is not written); ``retrain`` and ``ablation`` are written as given. The ``study_file``
fixture (conftest.py) is this function bound to the test's ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

STUDY = {"dataset": "synthetic", "n_trials": 3, "sampler": "random", "seed": 0, "pruner": "none"}
SPACE = {"optim.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True}}
FIXED = {
    "model.name": "improved_cnn",
    "model.width": 0.25,
    "optim.epochs": 2,
    "optim.batch_size": 32,
    "aug.preset": "none",
    "runtime.device": "cpu",
    "data.synthetic_size": 200,
    "data.synthetic_classes": 4,
}

# The study the command-line tests search (the ``searched`` fixture): two parameters, a
# final retrain and an ablation. No device in the file: ``search`` is given ``--device cpu``,
# the other commands pick one.
SEARCHED_STUDY = {
    "space": {"model.dropout": {"type": "categorical", "choices": [0.0, 0.3]}},
    "fixed": {"runtime.device": None},
    "retrain": {"epochs": 2, "seeds": [0]},
    "ablation": [{"name": "narrow", "set": {"model.width": 0.125}}],
}


def _merged(defaults: dict, changes: dict | None) -> dict:
    table = {**defaults, **(changes or {})}
    return {key: value for key, value in table.items() if value is not None}


def study_document(
    *,
    study: dict | None = None,
    space: dict | None = None,
    fixed: dict | None = None,
    retrain: dict | None = None,
    ablation: list[dict] | None = None,
) -> dict:
    """The study file's tables: the tiny defaults with these changes."""
    doc = {
        "study": _merged(STUDY, study),
        "space": _merged(SPACE, space),
        "fixed": _merged(FIXED, fixed),
        "retrain": retrain or {},
        "ablation": ablation or [],
    }
    return {name: table for name, table in doc.items() if table}


def write_study(folder: Path, name: str = "tiny", **changes) -> Path:
    """Write ``folder/<name>.toml`` (the study is named after its file) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(study_document(**changes)))
    return path
