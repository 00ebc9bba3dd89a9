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


def test_describing_models_does_not_import_torch_until_one_is_built() -> None:
    code = (
        "import sys, cifar_models\n"
        "names = cifar_models.list_models()\n"
        "knobs = cifar_models.model_knobs('se_resnet18')\n"
        "try:\n"
        "    cifar_models.model_family('resnet21')\n"
        "except cifar_models.ModelConfigError as exc:\n"
        "    error = str(exc)\n"
        "print(len(names), 'torch' in sys.modules, knobs['attention'], error)\n"
        "cifar_models.create('resnet20', 10)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    first, second = done.stdout.splitlines()
    assert first.startswith(f"{len(cifar_models.list_models())} False se unknown model 'resnet21'")
    assert "did you mean 'resnet32'?" in first
    assert second == "True"
