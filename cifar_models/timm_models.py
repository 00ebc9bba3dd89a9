"""``timm:<name>`` models, built on demand by ``registry.create``: any timm model, untrained,
with its classifier sized for ``num_classes``. Imports nothing from the registry (which
imports this module when it meets a ``timm:`` name), so the two form no cycle."""

from __future__ import annotations

from torch import nn

from .catalog import TIMM_PREFIX
from .errors import ModelConfigError


def create_timm_model(timm_name: str, num_classes: int, knobs: dict[str, object]) -> nn.Module:
    """Build ``timm:<timm_name>`` untrained; ``knobs`` are already validated (only ``dropout``)."""
    name = TIMM_PREFIX + timm_name
    try:
        import timm
    except ImportError:
        message = f"{name} needs the optional 'timm' extra: pip install -e '.[timm]'"
        raise ModelConfigError(message, key="name", value=name) from None
    if not timm.is_model(timm_name):
        message = f"unknown timm model {timm_name!r} in {name!r}; see timm.list_models()"
        raise ModelConfigError(message, key="name", value=name)
    dropout = knobs.get("dropout", 0.0)
    return timm.create_model(
        timm_name, pretrained=False, num_classes=num_classes, drop_rate=dropout
    )
