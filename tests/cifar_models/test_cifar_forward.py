"""Every registered model trains and predicts on CIFAR-sized (and larger) batches.

Models that take ``width`` run at 1/8 width so the whole zoo stays fast on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar_models import create, list_models, model_knobs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run these tiny models single-threaded.

    They gain nothing from intra-op parallelism, and when another process shares the
    CPU cores (e.g. a second test suite), spinning OpenMP workers slow them down 10x or more.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(name: str, **knobs: object) -> nn.Module:
    if "width" in model_knobs(name):
        knobs.setdefault("width", 0.125)
    torch.manual_seed(0)
    return create(name, knobs.pop("num_classes", 10), **knobs)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_and_eval(name: str, num_classes: int) -> None:
    model = _tiny(name, num_classes=num_classes)
    x = torch.randn(2, 3, 32, 32)

    model.train()
    logits = model(x)
    assert logits.shape == (2, num_classes)
    logits.logsumexp(dim=1).sum().backward()
    # A parameter without a gradient is a layer that was built but never wired into forward.
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, num_classes)
        # Adaptive pooling before the classifier lets larger images through unchanged code.
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, num_classes)


def _leaf_call_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """Leaf modules in the order forward() actually calls them."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda module, args, out: order.append(module))
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return order


@pytest.mark.parametrize("name", list_models())
def test_dropout_runs_right_before_the_classifier(name: str) -> None:
    model = _tiny(name, num_classes=7, dropout=0.35)
    *_, before_last, last = _leaf_call_order(model, torch.randn(2, 3, 32, 32))
    assert isinstance(last, nn.Linear) and last.out_features == 7
    assert isinstance(before_last, nn.Dropout)
    assert before_last.p == pytest.approx(0.35)


def test_dropout_is_active_in_training_only() -> None:
    model = create("simple_cnn", 10, dropout=0.5, width=0.25)
    captured: list[torch.Tensor] = []
    model.head.fc.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    x = torch.rand(64, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model(x)
        model.train()
        model(x)
    eval_in, train_in = captured
    dropped = (train_in == 0) & (eval_in != 0)
    assert 0.35 < dropped.float().mean() < 0.65
    kept = train_in != 0
    # Survivors are rescaled by 1 / (1 - p).
    torch.testing.assert_close(train_in[kept], eval_in[kept] * 2)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "ghost_resnet20"])
@pytest.mark.parametrize("attention", ["se", "eca"])
def test_attention_variants_run(name: str, attention: str) -> None:
    model = _tiny(name, attention=attention, se_reduction=4, eca_kernel=5)
    expected = "SqueezeExcite" if attention == "se" else "EfficientChannelAttention"
    assert expected in _module_types(model)
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def _module_types(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


def test_se_default_on_se_resnet_and_eca_default_on_eca_resnet() -> None:
    assert "SqueezeExcite" in _module_types(_tiny("se_resnet18"))
    assert "SqueezeExcite" not in _module_types(_tiny("se_resnet18", attention="none"))
    assert "EfficientChannelAttention" in _module_types(_tiny("eca_resnet20"))
    assert "EfficientChannelAttention" not in _module_types(_tiny("resnet20"))
