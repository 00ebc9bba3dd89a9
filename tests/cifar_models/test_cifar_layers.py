"""Behaviour of the shared building blocks (attention, Ghost module, option-A shortcut)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar_models.cifar_resnet import CifarBasicBlock, PadShortcut
from cifar_models.layers import (
    EfficientChannelAttention,
    GhostModule,
    SqueezeExcite,
    make_attention,
    scale_channels,
)
from cifar_models.resnet import BasicBlock, Bottleneck


def test_scale_channels_rounds_and_never_reaches_zero() -> None:
    assert scale_channels(64, 1.0) == 64
    assert scale_channels(64, 0.25) == 16
    assert scale_channels(16, 0.01) == 1


def test_se_hidden_size_has_a_floor_of_one() -> None:
    assert SqueezeExcite(64, 16).fc1.out_features == 4
    assert SqueezeExcite(8, 16).fc1.out_features == 1


@pytest.mark.parametrize(("bias", "expected_scale"), [(50.0, 1.0), (-50.0, 0.0)])
def test_se_gates_channels(bias: float, expected_scale: float) -> None:
    se = SqueezeExcite(8, 2)
    nn.init.zeros_(se.fc2.weight)
    nn.init.constant_(se.fc2.bias, bias)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(se(x), x * expected_scale)


def test_se_gate_depends_on_the_channel() -> None:
    se = SqueezeExcite(2, 1)
    nn.init.zeros_(se.fc2.weight)
    se.fc2.bias.data = torch.tensor([50.0, -50.0])
    x = torch.randn(1, 2, 3, 3)
    out = se(x)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    torch.testing.assert_close(out[:, 1], torch.zeros_like(x[:, 1]))


def test_eca_with_zero_kernel_halves_the_input() -> None:
    eca = EfficientChannelAttention(3)
    nn.init.zeros_(eca.conv.weight)
    x = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(eca(x), x * 0.5)


def test_eca_gate_reads_the_neighbouring_channel() -> None:
    eca = EfficientChannelAttention(3)
    # Cross-correlation with [0, 0, 100]: channel c's gate is sigmoid(100 * mean of channel c+1).
    eca.conv.weight.data = torch.tensor([[[0.0, 0.0, 100.0]]])
    x = torch.tensor([1.0, -1.0, 1.0, -1.0])[None, :, None, None].expand(1, 4, 2, 2)
    gates = (eca(x) / x)[0, :, 0, 0]
    # The last channel's neighbour is the zero padding, so its gate is sigmoid(0).
    torch.testing.assert_close(gates, torch.tensor([0.0, 1.0, 0.0, 0.5]))


def test_make_attention_kinds() -> None:
    assert isinstance(make_attention("se", 32, 4, 3), SqueezeExcite)
    assert isinstance(make_attention("eca", 32, 4, 5), EfficientChannelAttention)
    assert isinstance(make_attention("none", 32), nn.Identity)
    with pytest.raises(ValueError):
        make_attention("cbam", 32)


@pytest.mark.parametrize(("out_channels", "ratio", "primary"), [(8, 2, 4), (5, 3, 2), (1, 2, 1)])
def test_ghost_module_shapes(out_channels: int, ratio: int, primary: int) -> None:
    ghost = GhostModule(3, out_channels, 3, 2, ratio)
    assert ghost.primary[0].out_channels == primary
    assert ghost.cheap[0].groups == primary  # depthwise: one group per primary channel
    assert ghost.cheap[0].out_channels == primary * (ratio - 1)
    assert ghost(torch.randn(2, 3, 8, 8)).shape == (2, out_channels, 4, 4)


def test_pad_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    assert not list(PadShortcut(16, 32, 2).parameters())


def _closed_se(channels: int) -> SqueezeExcite:
    """An SE block whose gates are all ~0, i.e. it suppresses whatever it scales."""
    se = SqueezeExcite(channels, 4)
    nn.init.zeros_(se.fc2.weight)
    nn.init.constant_(se.fc2.bias, -50.0)
    return se


@pytest.mark.parametrize(
    "make_block",
    [
        lambda: BasicBlock(16, 16, 1, _closed_se(16)),
        lambda: Bottleneck(16, 4, 1, _closed_se(16)),
        lambda: CifarBasicBlock(16, 16, 1, _closed_se(16), None),
        lambda: CifarBasicBlock(16, 16, 1, _closed_se(16), 2),
    ],
)
def test_attention_scales_the_residual_branch_before_the_addition(make_block) -> None:
    # With the branch gated off, an identity block reduces to relu(x); gating after
    # the addition would zero the whole output instead.
    block = make_block().eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))
