"""Models built by other libraries: torchvision's EfficientNet-B2 (registered here) and
any timm model (``timm_models``, built on demand by the registry).

Both keep their ImageNet architecture (global pooling makes 32x32 inputs work); the
classifier is sized for ``num_classes`` and library failures become ModelConfigError.
"""

from __future__ import annotations

from torch import nn

from .errors import ModelConfigError
from .registry import register_model


def _imagenet_efficientnet_b2(dropout: float) -> nn.Module:
    """EfficientNet-B2 with downloaded ImageNet weights and its 1000-class head."""
    from torchvision.models import EfficientNet_B2_Weights
    from torchvision.models import efficientnet_b2 as tv_efficientnet_b2

    weights = EfficientNet_B2_Weights.IMAGENET1K_V1
    try:
        state_dict = weights.get_state_dict(progress=True, check_hash=True)
    # Network failures are OSErrors (URLError, timeouts); a truncated or tampered file
    # fails torch.hub's hash check with RuntimeError.
    except (OSError, RuntimeError) as err:
        raise ModelConfigError(
            "pretrained ImageNet weights for efficientnet_b2 could not be downloaded "
            f"(offline?): {err}; use pretrained=false",
            key="pretrained",
            value=True,
        ) from err
    model = tv_efficientnet_b2(weights=None, dropout=dropout)
    model.load_state_dict(state_dict)
    return model


@register_model("efficientnet")
def efficientnet_b2(
    num_classes: int, *, dropout: float = 0.3, pretrained: bool = False
) -> nn.Module:
    """torchvision EfficientNet-B2 (7.7M parameters at 10 classes), optionally from ImageNet."""
    # torchvision.models takes ~1.5 s to import: only pay for it when this model is built.
    from torchvision.models import efficientnet_b2 as tv_efficientnet_b2

    if not pretrained:
        return tv_efficientnet_b2(weights=None, num_classes=num_classes, dropout=dropout)
    model = _imagenet_efficientnet_b2(dropout)
    # classifier is Sequential(Dropout, Linear): only the Linear is replaced for the new classes.
    old_head = model.classifier[1]
    model.classifier[1] = nn.Linear(old_head.in_features, num_classes)
    return model
