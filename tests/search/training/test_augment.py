from __future__ import annotations

import torch

from search.config import AugConfig
from search.training import AugmentPlan, BatchAugment, augment


def _images(n: int = 16, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_presets_and_explicit_toggles():
    assert AugmentPlan.from_config(AugConfig(preset="none")).crop_padding == 0
    std = AugmentPlan.from_config(AugConfig(preset="standard"))
    assert std.crop_padding == 4 and std.flip and std.erasing == 0
    full = AugmentPlan.from_config(AugConfig(preset="full", erasing=0.0, jitter=0.1))
    assert full.erasing == 0.0 and full.jitter == 0.1 and full.flip
    basic = AugmentPlan.from_config(AugConfig(preset="basic"))
    assert basic.flip and basic.crop_padding == 0


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = _images(8)
    out = augment.random_crop(x, 4, _gen())
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(8):
        found = any(
            torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])
            for dy in range(9)
            for dx in range(9)
        )
        assert found
    assert not torch.equal(out, x)  # with 8 images some shift is non-zero


def test_random_flip_mirrors_about_half():
    x = _images(200)
    out = augment.random_flip(x, _gen())
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(200)]
    kept = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 60 < sum(flipped) < 140


def test_erasing_zeroes_one_rectangle_with_probability_one():
    x = torch.ones(32, 3, 32, 32)
    out = augment.random_erasing(x, 1.0, _gen())
    for img in out:
        zero = img[0] == 0
        assert zero.any()
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        # the zeroed pixels fill exactly their bounding box: a rectangle
        assert zero.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert torch.equal(img[0] == 0, img[2] == 0)
    assert torch.equal(augment.random_erasing(x, 0.0, _gen()), x)


def test_colour_jitter_stays_in_range_and_changes_images():
    x = torch.rand(16, 3, 32, 32)
    out = augment.colour_jitter(x.clone(), 0.5, _gen())
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)


def test_rotation_zero_degrees_is_identity():
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(augment.random_rotation(x, 1e-9, _gen()), x, atol=1e-5)
    assert not torch.allclose(augment.random_rotation(x, 30, _gen()), x, atol=1e-2)


def test_batch_augment_normalises_resizes_and_is_seeded():
    plan = AugmentPlan.from_config(AugConfig(preset="full", resize=2, rotation=10.0))
    aug = BatchAugment(plan, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    x = _images()
    a, b = aug.train_batch(x, _gen(1)), aug.train_batch(x, _gen(1))
    assert a.shape == (16, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, aug.train_batch(x, _gen(2)))
    ev = aug.eval_batch(torch.full((1, 3, 32, 32), 128, dtype=torch.uint8))
    assert ev.shape == (1, 3, 64, 64)
    assert torch.allclose(ev, torch.full_like(ev, (128 / 255 - 0.5) / 0.25), atol=1e-5)
