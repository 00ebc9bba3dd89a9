"""The layers of search/ (DESIGN.md, "Inside search/"): imports point one way, the training
layer stays free of the search stack, and light commands start without the heavy stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "search"

# What each part of search/ may import from search/ (besides itself). Leaves first:
# errors, stats, interrupts <- config <- {training | study | store} (siblings, no edges
# between them) <- engine <- {retrain, ablation} <- reporting; perf <- training.
LEAVES = {"errors", "stats", "interrupts", "cache"}
ALLOWED = {
    "errors": set(),
    "stats": set(),
    "interrupts": set(),
    "cache": set(),
    "config": {"errors"},
    "training": LEAVES | {"config"},
    "study": LEAVES | {"config"},
    "store": LEAVES | {"config"},
    "engine": LEAVES | {"config", "training", "study", "store"},
    "retrain": LEAVES | {"config", "training", "study", "store", "engine"},
    "ablation": LEAVES | {"config", "training", "study", "store", "engine"},
    "reporting": LEAVES | {"config", "training", "study", "store", "engine", "retrain", "ablation"},
    "perf": LEAVES | {"config", "training"},
    # cli.py slurm: writes and submits the batch scripts that run `cli.py search`
    "cluster": LEAVES | {"config", "study", "store", "engine"},
    # the option layer of cli.py: click and errors at the top, config and study when used
    "cli_args": {"errors", "config", "study"},
    # the group class, process settings, the clean end on signals, train's config
    "cli_setup": {"errors", "config", "interrupts"},
    "cli_slurm_args": {"cli_args"},  # the options of cli.py slurm: click and cli_args
    # the Python API (from search import api): at the top, like cli.py
    "api": LEAVES
    | {"config", "training", "study", "store", "engine", "retrain", "ablation"}
    | {"reporting", "perf", "cluster", "cli_args", "cli_setup", "cli_slurm_args"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(SEARCH)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _search_imports(path: Path) -> set[str]:
    """The top-level parts of search/ that ``path`` imports (at any depth in the file)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "search":
                names = [f"search.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        parts |= {n.split(".")[1] for n in names if n.startswith("search.")}
    return parts


def _modules() -> list[Path]:
    return sorted(p for p in SEARCH.rglob("*.py") if p.name != "__init__.py" or p.parent != SEARCH)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    part = _part(path)
    assert part in ALLOWED, f"{part} is not a known layer of search/: add it to DESIGN.md"
    wrong = _search_imports(path) - ALLOWED[part] - {part}
    assert not wrong, f"{path.relative_to(ROOT)} ({part}) must not import search.{wrong}"


def test_the_layer_rules_can_fail(tmp_path: Path) -> None:
    # the check itself: a training module importing the store is caught
    bad = tmp_path / "bad.py"
    bad.write_text("from search.store import Tracker\nimport search.engine.loop\n")
    assert _search_imports(bad) == {"store", "engine"}
    assert _search_imports(bad) - ALLOWED["training"] == {"store", "engine"}


def test_no_module_is_over_400_lines_and_cli_is_at_most_450() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long
    assert len((ROOT / "cli.py").read_text().splitlines()) <= 450


def _imported_after(code: str) -> set[str]:
    """Top-level module names imported by running ``code`` in a fresh interpreter."""
    # the names go to stderr after a marker: the command's own output (a table that
    # mentions torch.compile, say) must not count as an import
    script = (
        f"{code}\nimport sys\nprint('MODULES', *sorted({{m.split('.')[0] for m in sys.modules}}),"
        " file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_the_training_layer_imports_no_search_stack() -> None:
    loaded = _imported_after("import search.training")
    assert "torch" in loaded  # the check sees what was imported
    assert not loaded & {"optuna", "mlflow", "click"}


HEAVY = {"torch", "sklearn", "mlflow"}


@pytest.mark.parametrize(
    "argv",
    [
        ["keys"],
        ["studies"],
        ["--help"],
        ["search", "--help"],
        ["search", "--study", "no_such_study"],
    ],
)
def test_light_commands_import_no_torch_sklearn_or_mlflow(argv: list[str]) -> None:
    code = (
        "import cli\n"
        "try:\n"
        f"    cli.main({argv!r}, prog_name='cli.py')\n"
        "except SystemExit:\n"
        "    pass"
    )
    loaded = _imported_after(code)
    assert "click" in loaded and "search" in loaded
    assert not loaded & HEAVY, f"cli.py {' '.join(argv)} imported {loaded & HEAVY}"


def _package_imports(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` -> the modules of the package it imports, at any depth
    (an import inside a function still ties the two modules together)."""
    top = package.name
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        package_of = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package_of.rsplit(".", node.level - 1)[0]
                    base = f"{parent}.{base}" if base else parent
                candidates = {base} | {f"{base}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                candidates = {a.name for a in node.names}
            else:
                continue
            found |= {c for c in candidates if c.startswith(top) and c in modules}
        # a package's own __init__ and its parents are not edges of a cycle worth reporting
        edges[name] = {m for m in found if m != name and not name.startswith(m + ".")}
    return edges


@pytest.mark.parametrize("package", ["search", "cifar_models"])
def test_no_import_cycles(package: str) -> None:
    edges = _package_imports(ROOT / package)
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges[module]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*stack, dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
