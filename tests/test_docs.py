"""The documentation matches the code: the generated key reference is current, every command
is documented, the commands and options the pages show exist, and the README's links
point at files. (``mkdocs build --strict`` in .ci/run checks the links between pages.)"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
import pytest

import cifar_models
import cli
from search.config import FLAT_KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(DOCS.glob("*.md"))
COMMAND_PREFIXES = ("python cli.py", "cifar-search")


def _gen_keys():
    spec = importlib.util.spec_from_file_location("gen_keys", DOCS / "gen_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        names |= set(param.opts) | set(param.secondary_opts)
    return names


def test_key_reference_is_current():
    expected = _gen_keys().render()
    assert (DOCS / "keys.md").read_text() == expected, (
        "docs/keys.md is out of date: run python docs/gen_keys.py"
    )


def test_key_reference_lists_every_key_model_and_knob():
    text = (DOCS / "keys.md").read_text()
    for key in FLAT_KEYS:
        assert f"| `{key}` |" in text
    assert "| `model.ghost_ratio` | integer |" in text
    for name in cifar_models.list_models():
        assert f"| `{name}` |" in text
        for knob in cifar_models.model_knobs(name):
            assert f"`model.{knob}`" in text


def test_every_command_is_in_the_commands_table_with_real_options():
    page = (DOCS / "getting-started.md").read_text()
    rows = re.findall(r"^\| `cli\.py ([a-z-]+)([^`]*)` \|", page, flags=re.M)
    assert sorted(name for name, _ in rows) == sorted(cli.main.commands)
    for name, usage in rows:
        shown = set(re.findall(r"--[a-z0-9-]+", usage))
        unknown = shown - _options(cli.main.commands[name])
        assert not unknown, f"commands table: `cli.py {name}` has no {sorted(unknown)}"


def _shown_commands(text: str) -> list[str]:
    """Each command line of the fenced code blocks, continuation lines joined, comments cut."""
    lines: list[str] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line.startswith(COMMAND_PREFIXES):
                lines.append(line)
    return lines


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_commands_shown_exist_with_their_options(path):
    text = path.read_text()
    for name in re.findall(r"(?:python cli\.py|`cli\.py|cifar-search) ([a-z][a-z-]*)", text):
        assert name in cli.main.commands, f"{path.name}: no command {name!r}"
    for line in _shown_commands(text):
        words = line.split()
        command = cli.main.commands[words[2] if words[0] == "python" else words[1]]
        for word in words:
            option = word.split("=", 1)[0]
            if option.startswith("--"):
                assert option in _options(command), f"{path.name}: {line!r}: no {option}"


def test_readme_is_a_landing_page_whose_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to the docs"
    missing = [t for t in local if t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
