"""What models exist, without importing torch: name -> family and knob defaults.

The registry (``registry.py``, filled by the ``@register_model`` builders) is the source of
truth, but it needs torch, which costs seconds at start-up. Commands that only check a
model name (listing keys, loading study files) read ``catalog.json`` instead: a snapshot of
the built-in builders, written by ``python -m cifar_models`` and checked against the
registry whenever the registry loads, so a stale snapshot fails loudly instead of lying.
Once the registry is loaded (anything that builds a model), lookups use it, which includes
models registered at run time by user code.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from .errors import ModelConfigError, closest

TIMM_PREFIX = "timm:"
# timm models are built by timm itself; only the classifier dropout is passed through.
TIMM_KNOBS: dict[str, object] = {"dropout": 0.0}
CATALOG_FILE = Path(__file__).with_name("catalog.json")

Table = dict[str, tuple[str, dict[str, object]]]  # name -> (family, knob defaults)


@functools.cache
def builtin_catalog() -> Table:
    """The snapshot of the built-in models in ``catalog.json``."""
    raw = json.loads(CATALOG_FILE.read_text())
    return {name: (entry["family"], dict(entry["knobs"])) for name, entry in raw.items()}


def _table() -> Table:
    registry = sys.modules.get(f"{__package__}.registry")
    if registry is None:
        return builtin_catalog()
    from . import load_builtin_models

    load_builtin_models()  # a builder module imported on its own: load the others too
    return registry.table()


def is_timm(name: object) -> bool:
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def list_models() -> list[str]:
    """Sorted names of all registered models (``timm:<name>`` ones are not listed)."""
    return sorted(_table())


def _lookup(name: object) -> tuple[str, dict[str, object]]:
    table = _table()
    if isinstance(name, str) and name not in table and f"{__package__}.registry" not in sys.modules:
        # A name the snapshot lacks may be a model added since it was written: load the
        # builders (torch), which reports a stale catalog as such instead of "unknown model".
        from . import load_builtin_models

        load_builtin_models()
        table = _table()
    if isinstance(name, str) and name in table:
        return table[name]
    known = sorted(table)
    close = closest(name, known)
    hint = f" (did you mean {close!r}?)" if close else ""
    raise ModelConfigError(
        f"unknown model {name!r}{hint}; known models: {', '.join(known)} (or timm:<name>)",
        key="name",
        value=name,
    )


def model_family(name: str) -> str:
    """Family of a registered model (``"timm"`` for ``timm:<name>``)."""
    if is_timm(name):
        return "timm"
    return _lookup(name)[0]


def model_knobs(name: str) -> dict[str, object]:
    """Knob name -> default value that ``create(name, ...)`` accepts."""
    if is_timm(name):
        return dict(TIMM_KNOBS)
    return dict(_lookup(name)[1])


def check_catalog(builtins: Table) -> None:
    """Raise if ``catalog.json`` differs from the built-in builders (a programming error)."""
    snapshot = builtin_catalog()
    changed = sorted(n for n in set(builtins) | set(snapshot) if builtins.get(n) != snapshot.get(n))
    if changed:
        raise RuntimeError(
            f"{CATALOG_FILE} is out of date (differs for: {', '.join(changed)}); "
            f"regenerate it with `python -m cifar_models`"
        )


def write_catalog(builtins: Table) -> None:
    doc = {
        name: {"family": family, "knobs": knobs}
        for name, (family, knobs) in sorted(builtins.items())
    }
    CATALOG_FILE.write_text(json.dumps(doc, indent=1) + "\n")  # knobs in signature order
