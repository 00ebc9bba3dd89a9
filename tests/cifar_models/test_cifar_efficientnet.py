"""efficientnet_b2: torchvision architecture, pretrained weights and their failure mode."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn
from torchvision.models import EfficientNet_B2_Weights, efficientnet_b2

from cifar_models import ModelConfigError, create

WEIGHTS = EfficientNet_B2_Weights.IMAGENET1K_V1


def test_default_is_untrained_torchvision_b2() -> None:
    model = create("efficientnet_b2", 10)
    reference = efficientnet_b2(weights=None, num_classes=10)
    shapes = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == shapes
    assert model.classifier[0].p == pytest.approx(0.3)


@pytest.fixture
def refused_url() -> str:
    """An http URL whose connection is refused at once: a bound socket that never listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/efficientnet_b2.pth"
    finally:
        sock.close()


def test_pretrained_download_failure_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path, refused_url: str
) -> None:
    # An empty TORCH_HOME means no cached checkpoint can be found. Relying on this machine being
    # offline would not be deterministic (DNS timeouts; a real 35 MB download where there is
    # network), so the weights' URL points at a local port that refuses connections instead:
    # the download fails within milliseconds everywhere, exercising the same error wrapping.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for proxy in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.upper(), raising=False)
    monkeypatch.setattr(WEIGHTS.value, "url", refused_url)

    with pytest.raises(ModelConfigError) as info:
        create("efficientnet_b2", 10, pretrained=True)
    message = str(info.value)
    assert info.value.key == "pretrained"
    assert message.startswith(
        "pretrained ImageNet weights for efficientnet_b2 could not be downloaded (offline?): "
    )
    assert message.endswith("; use pretrained=false")
    assert "\n" not in message


def test_pretrained_loads_weights_and_replaces_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in ImageNet checkpoint with a recognisable stem weight, so no download is needed.
    imagenet = efficientnet_b2(weights=None)
    nn.init.constant_(imagenet.features[0][0].weight, 0.125)
    checkpoint = imagenet.state_dict()
    monkeypatch.setattr(
        EfficientNet_B2_Weights, "get_state_dict", lambda self, *args, **kwargs: checkpoint
    )

    model = create("efficientnet_b2", 100, pretrained=True, dropout=0.2)
    torch.testing.assert_close(model.features[0][0].weight, checkpoint["features.0.0.weight"])
    head = model.classifier[1]
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (1408, 100)
    assert model.classifier[0].p == pytest.approx(0.2)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
