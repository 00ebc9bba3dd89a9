"""Grad-CAM (search/reporting/gradcam.py): the feature layer is found for every built-in
model, the maps point at the image region that carries a class's evidence (a hand-built
net with known evidence, and a small zoo model trained on coloured squares), and the
figure is a valid PNG; models without a feature map are skipped by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cifar_models
from search.reporting.gradcam import (
    GradCamSkipped,
    _normalised,
    gradcam_maps,
    gradcam_png,
    target_layer,
)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# where the map that global pooling averages lives, per family of the zoo
EXPECTED = {
    "cnn": lambda m: m.features,
    "densenet": lambda m: m.features,
    "resnet": lambda m: m.stages,
    "se_resnet": lambda m: m.stages,
    "cifar_resnet": lambda m: m.stages,
    "ghost_resnet": lambda m: m.stages,
    # 1x1 at 32x32 after features[6]: the last 2x2 map is the expansion conv of its 1st block
    "efficientnet": lambda m: m.features[6][0].block[0],
}


def _small(name: str) -> nn.Module:
    knobs = cifar_models.model_knobs(name)
    return cifar_models.create(name, 10, **({"width": 0.25} if "width" in knobs else {}))


def _output_shape(model: nn.Module, layer: nn.Module, size: int = 32) -> tuple[int, ...]:
    shapes = []
    hook = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    hook.remove()
    return shapes[-1]


@pytest.mark.parametrize("name", cifar_models.list_models())
def test_target_layer_of_every_builtin_model(name):
    model = _small(name)
    layer = target_layer(model)
    assert model.training  # the probe restores the mode it found
    assert layer is EXPECTED[cifar_models.model_family(name)](model), name
    shape = _output_shape(model, layer)
    assert len(shape) == 4 and shape[2] * shape[3] > 1


def test_efficientnet_uses_its_last_features_at_64x64():
    model = cifar_models.create("efficientnet_b2", 10)
    assert target_layer(model, input_size=64) is model.features  # 2x2 there


@pytest.mark.parametrize("name", ["improved_cnn", "densenet121", "se_resnet18", "ghost_resnet20"])
def test_maps_are_computed_for_each_kind_of_layer(name):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    model = _small(name)
    maps = gradcam_maps(model, images, [0, 1, 2], CIFAR_MEAN, CIFAR_STD)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


class _TokenNet(nn.Module):
    """A conv patch embedding followed by a transformer layer: a ViT, not a CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.embed(x).flatten(2).transpose(1, 2)).mean(1))


def test_models_without_a_feature_map_are_skipped_by_name(tmp_path):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert target_layer(mlp) is None
    assert target_layer(_TokenNet()) is None
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    args = (images, [0, 1], [1, 0], CIFAR_MEAN, CIFAR_STD, tuple("abcdefghij"))
    with pytest.warns(GradCamSkipped, match="Grad-CAM skipped for model my_mlp: no conv"):
        assert gradcam_png(mlp, *args, tmp_path / "g.png", name="my_mlp") is None
    assert not (tmp_path / "g.png").exists()


def test_inputs_are_normalised_as_training_evaluates():
    from search.training.augment import AugmentPlan, BatchAugment

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    for resize in (1, 2):
        plan = AugmentPlan(0, False, 0.0, 0.0, 0.0, resize)
        expected = BatchAugment(plan, CIFAR_MEAN, CIFAR_STD, torch.device("cpu")).eval_batch(images)
        got = _normalised(
            images.numpy(), CIFAR_MEAN, CIFAR_STD, torch.device("cpu"), torch.float32, resize
        )
        torch.testing.assert_close(got, expected)


# the maps point at the evidence ------------------------------------------------------------
class _ColourNet(nn.Module):
    """Known evidence: class 0 is the amount of red (R > G), class 1 of green (G > R), summed
    over the image by global pooling, so a red square is all of class 0's evidence."""

    def __init__(self) -> None:
        super().__init__()
        detect = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            detect.weight.copy_(
                torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])[:, :, None, None]
            )
            detect.bias.zero_()
        self.features = nn.Sequential(detect, nn.ReLU(), nn.MaxPool2d(2))  # a 16x16 map
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey images with a red and a green 8x8 square at random, non-overlapping places;
    returns the images and the boolean masks of the red and the green squares."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 3, 32, 32), 128, dtype=np.uint8)
    red, green = np.zeros((n, 32, 32), bool), np.zeros((n, 32, 32), bool)
    for i in range(n):
        while True:
            (r1, c1), (r2, c2) = rng.integers(2, 24, size=(2, 2))
            if abs(r1 - r2) >= 10 or abs(c1 - c2) >= 10:
                break
        images[i, :, r1 : r1 + 8, c1 : c1 + 8] = np.array([230, 20, 20])[:, None, None]
        images[i, :, r2 : r2 + 8, c2 : c2 + 8] = np.array([20, 230, 20])[:, None, None]
        red[i, r1 : r1 + 8, c1 : c1 + 8] = True
        green[i, r2 : r2 + 8, c2 : c2 + 8] = True
    return images, red, green


def _points_at(heat: np.ndarray, region: np.ndarray) -> bool:
    """The map peaks inside ``region`` and is far stronger there than elsewhere."""
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    return bool(region[peak]) and heat[region].mean() > 4 * heat[~region].mean()


def test_the_map_of_each_class_peaks_on_that_class_s_evidence():
    model = _ColourNet()
    images, red, green = _squares(6, seed=0)
    assert target_layer(model) is model.features
    for target, evidence, other in ((0, red, green), (1, green, red)):
        maps = gradcam_maps(model, images, [target] * 6, CIFAR_MEAN, CIFAR_STD)
        for heat, here, there in zip(maps, evidence, other):
            assert _points_at(heat, here)
            assert not _points_at(heat, there)  # a wrong target would point there
    # the check can fail: a layer without spatial extent (the pooled map) shows nowhere
    flat = gradcam_maps(model, images, [0] * 6, CIFAR_MEAN, CIFAR_STD, layer=model.pool)
    assert not any(_points_at(heat, here) for heat, here in zip(flat, red))


def _coloured_squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy grey images with one 8x8 square whose colour is the class (red, green, blue)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(90, 166, size=(n, 3, 32, 32)).astype(np.uint8)
    labels = rng.integers(0, 3, size=n)
    masks = np.zeros((n, 32, 32), bool)
    for i, (r, c) in enumerate(rng.integers(0, 25, size=(n, 2))):
        colour = np.full(3, 40)
        colour[labels[i]] = 240
        images[i, :, r : r + 8, c : c + 8] = colour[:, None, None]
        masks[i, r : r + 8, c : c + 8] = True
    return images, labels, masks


def _contrast(heat: np.ndarray, region: np.ndarray) -> float:
    """How much hotter the map is inside ``region`` than outside it (0 for an empty map)."""
    return float(heat[region].mean() / max(heat[~region].mean(), 1e-9))


def test_a_trained_zoo_model_looks_at_the_square_it_classifies():
    torch.manual_seed(0)
    model = cifar_models.create("improved_cnn", 3, width=0.5)
    assert target_layer(model) is model.features  # a 4x4 map: 8-pixel cells
    images, labels, _ = _coloured_squares(512, seed=1)
    x = _normalised(images, CIFAR_MEAN, CIFAR_STD, torch.device("cpu"), torch.float32, 1)
    y = torch.as_tensor(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(40):
        batch = torch.randint(0, len(y), (32,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test_images, test_labels, masks = _coloured_squares(40, seed=2)
    with torch.no_grad():
        xt = _normalised(test_images, CIFAR_MEAN, CIFAR_STD, torch.device("cpu"), torch.float32, 1)
        predicted = model(xt).argmax(1).numpy()
    assert (predicted == test_labels).mean() > 0.9
    maps = gradcam_maps(model, test_images, predicted, CIFAR_MEAN, CIFAR_STD)
    # the square covers 6% of the image; the predicted class's map is > 2x hotter there
    assert np.mean([_contrast(m, k) > 2 for m, k in zip(maps, masks)]) >= 0.9
    # and another class's map is not: a wrong target fails this test
    others = gradcam_maps(model, test_images, (predicted + 1) % 3, CIFAR_MEAN, CIFAR_STD)
    assert np.mean([_contrast(m, k) > 2 for m, k in zip(others, masks)]) <= 0.1


# the figure ------------------------------------------------------------------------------
def test_gradcam_png_is_a_valid_figure(tmp_path):
    model = _small("resnet20")
    images, labels, _ = _coloured_squares(10, seed=3)
    model.train()
    png = gradcam_png(
        model,
        images,
        labels,
        (labels + 1) % 3,
        CIFAR_MEAN,
        CIFAR_STD,
        ("red", "green", "blue"),
        tmp_path / "gradcam.png",
        n=8,
        name="resnet20",
    )
    assert model.training  # left in the mode it came in
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] >= 600 and image.size[1] >= 300
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 100
    assert (
        gradcam_png(model, images[:0], [], [], CIFAR_MEAN, CIFAR_STD, ("a",), tmp_path / "x.png")
        is None
    )


@pytest.mark.gpu
def test_maps_on_a_cuda_model_match_the_cpu_ones():
    # the final model comes off the training device, channels_last and maybe compiled
    model = _small("se_resnet18").eval()
    images = np.random.default_rng(0).integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    on_cpu = gradcam_maps(model, images, [0, 1, 2, 3], CIFAR_MEAN, CIFAR_STD)
    cuda = model.to("cuda", memory_format=torch.channels_last)
    compiled = torch.compile(cuda)
    assert target_layer(compiled) is cuda.stages
    on_gpu = gradcam_maps(compiled, images, [0, 1, 2, 3], CIFAR_MEAN, CIFAR_STD)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-2)  # TF32 convolutions
