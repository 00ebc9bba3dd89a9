"""``timm:`` models on CIFAR-sized input: a model made for 224x224 is built for the data's
size where timm allows it, and one that cannot take it is a one-line error that says which
``aug.resize`` fits, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm  # noqa: E402  (the dev extra installs it)
import torch
from in_process import run_cli as in_process

from cifar_models import ModelConfigError, create

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = [
    "--dataset",
    "synthetic",
    "--set",
    "data.synthetic_size=20",
    "--set",
    "data.synthetic_classes=2",
    "--set",
    "optim.epochs=1",
    "--set",
    "optim.batch_size=8",
    "--device",
    "cpu",
]


def _forward(model: torch.nn.Module, side: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, side, side))


@pytest.mark.parametrize("name", ["timm:mixer_s16_224", "timm:coatnet_nano_rw_224"])
def test_a_fixed_size_model_is_built_for_32x32(name: str) -> None:
    # timm's default build asserts (or fails in a matmul) on anything but 224x224
    assert _forward(create(name, 10), 32).shape == (2, 10)


def test_the_image_size_given_is_the_one_built_for() -> None:
    model = create("timm:mixer_s16_224", 7, image_size=64)
    assert _forward(model, 64).shape == (2, 7)
    with pytest.raises(AssertionError):  # timm's check: built for 64, not for 32
        _forward(model, 32)


def test_a_model_without_img_size_is_built_as_timm_builds_it() -> None:
    model = create("timm:resnet18", 10)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    shapes = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == shapes
    assert _forward(model, 32).shape == (2, 10)


def test_finding_the_size_leaves_the_seeded_weights_as_timm_draws_them() -> None:
    # the probes run on the meta device and give the random generator back untouched
    torch.manual_seed(0)
    model = create("timm:mixer_s16_224", 10)
    torch.manual_seed(0)
    reference = timm.create_model("mixer_s16_224", pretrained=False, num_classes=10, img_size=32)
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_a_model_that_cannot_take_32x32_names_the_resize_that_fits() -> None:
    # inception_v3's stem shrinks 32x32 to nothing; no img_size argument to change it
    with pytest.raises(ModelConfigError) as info:
        create("timm:inception_v3", 10)
    message = str(info.value)
    assert message.startswith("timm:inception_v3 cannot take 32x32 images (")
    assert message.endswith("; set aug.resize = 3 (96x96 images) to train it")
    assert "\n" not in message
    assert (info.value.key, info.value.value) == ("name", "timm:inception_v3")


def test_train_builds_a_fixed_size_model_for_the_resized_images(tmp_path: Path) -> None:
    # aug.resize = 2: the model (timm's small test ViT, made for 160x160) sees 64x64
    # images, and is built for them
    args = ["train", "--model", "timm:test_vit_relpos", *TINY_TRAIN, "--set", "aug.resize=2"]
    result = in_process(*args, cwd=tmp_path)
    assert result.exit_code == 0, result.output


def test_train_on_a_model_that_cannot_take_the_images_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "train",
            "--model",
            "timm:inception_v3",
            *TINY_TRAIN,
        ],
        cwd=tmp_path,
        env={**os.environ, "CIFAR_NO_DOWNLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.name: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "timm:inception_v3 cannot take 32x32 images" in lines[0]
    assert "set aug.resize = 3" in lines[0]
