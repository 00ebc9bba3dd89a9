"""The torch-free catalog of built-in models agrees with the registry, and stays torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cifar_models
from cifar_models import catalog, registry

ROOT = Path(__file__).resolve().parents[2]


def test_catalog_file_is_the_registry_s_built_in_models() -> None:
    builtins = registry.builtin_table()
    assert builtins == catalog.builtin_catalog()
    # knob order is the builders' signature order (what `cli.py models` shows)
    for name, (_, knobs) in builtins.items():
        assert list(catalog.builtin_catalog()[name][1]) == list(knobs)


def test_a_stale_catalog_is_refused_with_the_command_that_fixes_it(tmp_path, monkeypatch) -> None:
    stale = json.loads(catalog.CATALOG_FILE.read_text())
    stale["resnet20"]["knobs"]["width"] = 2.0
    del stale["resnet56"]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(stale))
    monkeypatch.setattr(catalog, "CATALOG_FILE", path)
    catalog.builtin_catalog.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"resnet20, resnet56.*python -m cifar_models"):
            catalog.check_catalog(registry.builtin_table())
    finally:
        catalog.builtin_catalog.cache_clear()


def test_describing_known_models_does_not_import_torch() -> None:
    code = (
        "import sys, cifar_models\n"
        "names = cifar_models.list_models()\n"
        "knobs = cifar_models.model_knobs('se_resnet18')\n"
        "family = cifar_models.model_family('resnet56')\n"
        "print(len(names), 'torch' in sys.modules, knobs['attention'], family)\n"
        "try:\n"
        "    cifar_models.model_family('resnet21')\n"
        "except cifar_models.ModelConfigError as exc:\n"
        "    print(exc)\n"
        "cifar_models.create('resnet20', 10)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    first, error, last = done.stdout.splitlines()
    assert first == f"{len(cifar_models.list_models())} False se cifar_resnet"
    # an unknown name loads the builders (a stale catalog would say so); same message
    assert error.startswith("unknown model 'resnet21' (did you mean 'resnet20'?); known models:")
    assert last == "True"


def test_a_model_missing_from_a_stale_catalog_is_reported_as_stale_on_every_load(tmp_path):
    # a model added to the builders without `python -m cifar_models`: the torch-free
    # lookup must not answer "unknown model", and nothing may go on with the registry
    stale = json.loads(catalog.CATALOG_FILE.read_text())
    del stale["resnet56"]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(stale))
    code = (
        "from pathlib import Path\n"
        "import cifar_models\n"
        "from cifar_models import catalog\n"
        f"catalog.CATALOG_FILE = Path({str(path)!r})\n"
        "for attempt in (lambda: cifar_models.model_family('resnet56'),\n"
        "                lambda: cifar_models.create('resnet20', 10),\n"
        "                lambda: cifar_models.list_models()):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('answered')\n"
        "    except RuntimeError as exc:\n"
        "        print('stale' if 'python -m cifar_models' in str(exc) else exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.split() == ["stale", "stale", "stale"], done.stdout + done.stderr


def test_create_from_the_registry_module_alone_builds_a_built_in_model() -> None:
    code = (
        "from cifar_models.registry import create, list_models\n"
        "print(type(create('resnet20', 10)).__name__, 'resnet56' in list_models())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.split() == ["CifarResNet", "True"]
