"""Parameter counts pin the architectures to their reference implementations.

Big models are built on the meta device: shapes only, no memory or init cost.
"""

from __future__ import annotations

import pytest
import torch

from cifar_models import count_parameters, create, list_models, model_knobs


def _params(name: str, num_classes: int = 10, **knobs: object) -> int:
    with torch.device("meta"):
        return count_parameters(create(name, num_classes, **knobs))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # kuangliu/pytorch-cifar
        ("resnet18", 11_173_962),
        ("resnet34", 21_282_122),
        ("resnet50", 23_520_842),
        ("densenet121", 6_956_298),
        # He et al. 2016 with option-A shortcuts: 0.27M / 0.46M / 0.85M / 1.7M
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
        # PyTorch CIFAR tutorial LeNet
        ("base_cnn", 62_006),
        # torchvision's 9,109,994 minus the 1000-class head plus a 10-class one
        ("efficientnet_b2", 7_715_084),
        # Regression pins: the rest, as this implementation builds them (kuangliu depths).
        ("resnet101", 42_512_970),
        ("resnet152", 58_156_618),
        ("se_resnet34", 21_443_318),
        ("se_resnet101", 47_290_682),
        ("se_resnet152", 64_785_658),
        ("densenet169", 12_493_322),
        ("densenet201", 18_104_330),
        ("densenet264", 30_667_786),
        ("simple_cnn", 94_538),
        ("improved_cnn", 94_762),
        ("eca_resnet32", 464_199),
        ("ghost_resnet20", 139_114),
        ("ghost_resnet32", 238_794),
    ],
)
def test_reference_parameter_counts(name: str, expected: int) -> None:
    assert _params(name) == expected


def test_resnet20_is_about_0_27m() -> None:
    assert round(_params("resnet20") / 1e6, 2) == 0.27


def test_classes_only_change_the_final_linear() -> None:
    # resnet18's classifier has 512 inputs: 90 more classes add 90 * (512 + 1) parameters.
    assert _params("resnet18", 100) - _params("resnet18", 10) == 90 * 513


def test_count_parameters_skips_frozen_parameters() -> None:
    model = create("base_cnn", 10)
    total = count_parameters(model)
    model.features[0].weight.requires_grad_(False)
    assert count_parameters(model) == total - 6 * 3 * 5 * 5


def _resnet_block_channels(depth: int) -> list[int]:
    """Output channels of every residual block in the CIFAR ImageNet-depth ResNets."""
    blocks, expansion = {18: ((2, 2, 2, 2), 1), 50: ((3, 4, 6, 3), 4)}[depth]
    return [c * expansion for c, n in zip((64, 128, 256, 512), blocks) for _ in range(n)]


@pytest.mark.parametrize(("depth", "reduction"), [(18, 16), (18, 8), (50, 16)])
def test_se_adds_two_linear_layers_per_block(depth: int, reduction: int) -> None:
    def se_params(c: int) -> int:
        hidden = max(1, c // reduction)
        return (c * hidden + hidden) + (hidden * c + c)

    expected = sum(se_params(c) for c in _resnet_block_channels(depth))
    plain = _params(f"resnet{depth}")
    assert _params(f"resnet{depth}", attention="se", se_reduction=reduction) - plain == expected
    assert _params(f"se_resnet{depth}", se_reduction=reduction) - plain == expected


def test_se_resnet_without_attention_is_resnet() -> None:
    with torch.device("meta"):
        plain = create("resnet18", 10)
        se_off = create("se_resnet18", 10, attention="none")
    assert count_parameters(se_off) == count_parameters(plain)
    shapes = [(k, tuple(v.shape)) for k, v in plain.state_dict().items()]
    assert [(k, tuple(v.shape)) for k, v in se_off.state_dict().items()] == shapes


@pytest.mark.parametrize(
    ("name", "blocks"), [("resnet18", 8), ("resnet50", 16), ("resnet20", 9), ("resnet32", 15)]
)
def test_eca_adds_one_kernel_per_block(name: str, blocks: int) -> None:
    assert _params(name, attention="eca", eca_kernel=5) - _params(name) == 5 * blocks


def test_eca_resnet_defaults() -> None:
    assert _params("eca_resnet20") == 269_722 + 9 * 3


def test_ghost_modules_shrink_the_network() -> None:
    plain = _params("resnet20")
    ghost2 = _params("ghost_resnet20")
    ghost4 = _params("ghost_resnet20", ghost_ratio=4)
    assert ghost4 < ghost2 < plain
    # Ratio 2 roughly halves the block convs, which hold nearly all of resnet20's weights.
    assert 0.4 < ghost2 / plain < 0.6


@pytest.mark.parametrize("name", [n for n in list_models() if "width" in model_knobs(n)])
def test_width_shrinks_parameters(name: str) -> None:
    full, half = _params(name), _params(name, width=0.5)
    assert half < full
    # Conv weights scale with width**2, so halving the width must cut well over half.
    assert half < 0.6 * full
