"""``python -m cifar_models``: rewrite ``catalog.json`` from the built-in builders (after
adding or changing a model; the registry refuses to load with a stale catalog)."""

from cifar_models import import_builtin_models
from cifar_models.catalog import CATALOG_FILE, write_catalog

import_builtin_models()
from cifar_models.registry import builtin_table  # noqa: E402 - registered by the line above

write_catalog(builtin_table())
print(f"wrote {CATALOG_FILE}")
