"""Grad-CAM class-activation maps of a final model: where in a test image the evidence for
a class lies, drawn over the most confidently wrong test images.

Computed with Captum's ``LayerGradCam``: Captum is the PyTorch team's own, maintained
attribution library, works on any ``nn.Module`` given one of its layers (no model
wrappers or re-implementation of hooks here), handles in-place activations and batched
targets, and has the other attribution methods (Integrated Gradients, occlusion, ...) should
we want them. Grad-CAM (Selvaraju et al. 2017) weights a convolutional feature map's
channels by the mean gradient of the target class's logit and keeps the positive part.

``target_layer`` picks the feature map for every model of this zoo without a table of
names: it runs the model once on a blank input and takes the last module, in the order
modules finish, that contains a ``Conv2d`` and outputs an (N, C, H, W) map with more than
one position (the map that global pooling then averages away). For the CIFAR ResNets
(plain, SE, ECA, Ghost) and ImageNet-depth ResNets that is ``model.stages``; for the CNNs
and DenseNets ``model.features``; for torchvision's EfficientNet-B2, whose map is 1x1 at
32x32 inputs, the last 2x2 map (the expansion conv of stage 7's first block). Models
with no such map, or with token (N, L, C) outputs after it (vision transformers), get
None, and ``gradcam_png`` skips them with a warning naming the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search.training.augment import normalise


class GradCamSkipped(UserWarning):
    """``gradcam_png`` drew nothing: the model has no convolutional feature map."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The module itself behind ``torch.compile`` (hooks need the eager module)."""
    return getattr(model, "_orig_mod", model)


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def target_layer(model: nn.Module, input_size: int = 32) -> nn.Module | None:
    """The last convolutional feature layer of ``model`` (see the module docstring), or
    None when it has none, or cannot run on a (1, 3, input_size, input_size) input."""
    model = _unwrap(model)
    finished: list[tuple[nn.Module, tuple[int, ...] | None]] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        finished.append((module, tuple(output.shape) if torch.is_tensor(output) else None))

    hooks = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    was_training = model.training
    blank = torch.zeros(
        1, 3, input_size, input_size, device=_device(model), dtype=_float_dtype(model)
    )
    try:
        model.eval()
        with torch.no_grad():
            model(blank)
    except (RuntimeError, ValueError, AssertionError, TypeError):
        return None  # e.g. a transformer that only takes its own image size
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    with_conv = {
        id(m) for m in model.modules() if any(isinstance(s, nn.Conv2d) for s in m.modules())
    }
    for position in range(len(finished) - 1, -1, -1):
        module, shape = finished[position]
        if id(module) in with_conv and shape is not None and len(shape) == 4:
            if math.prod(shape[2:]) > 1:
                later = finished[position + 1 :]
                if any(s is not None and len(s) == 3 for _, s in later):
                    return None  # tokens after the last map: not a CNN
                return module
    return None


def _normalised(
    images_uint8: np.ndarray | torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    dtype: torch.dtype,
    resize: int,
) -> torch.Tensor:
    """``(uint8 / 255 - mean) / std`` as training evaluates (``BatchAugment.eval_batch``)."""
    x = torch.as_tensor(np.asarray(images_uint8)).to(device)
    m = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
    return normalise(x, m, s, resize).to(dtype)


def gradcam_maps(
    model: nn.Module,
    images_uint8: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layer: nn.Module | None = None,
    device: str | torch.device | None = None,
    resize: int = 1,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) of ``targets`` (one class per image) over the raw
    (N, 3, H, W) ``images_uint8``, upsampled bilinearly to the image size and scaled to
    [0, 1] per image (all zeros where nothing speaks for the class). ``device``: where the
    model is (default: where its parameters are); ``layer`` defaults to
    ``target_layer(model)``; ``resize`` as ``aug.resize`` in training. The model is put in
    eval mode and its mode restored; no gradients are left on its parameters."""
    from captum.attr import LayerAttribution, LayerGradCam

    model = _unwrap(model)
    device = _device(model) if device is None else torch.device(device)
    images = np.asarray(images_uint8)
    size = images.shape[-2:]
    if layer is None:
        layer = target_layer(model, input_size=int(size[-1]) * resize)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no convolutional feature map for Grad-CAM")
    targets = [int(t) for t in targets]
    if len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")
    cam = LayerGradCam(model, layer)
    dtype = _float_dtype(model)
    was_training = model.training
    maps = []
    try:
        model.eval()
        with torch.enable_grad():
            for start in range(0, len(images), batch_size):
                x = _normalised(
                    images[start : start + batch_size], mean, std, device, dtype, resize
                )
                attribution = cam.attribute(
                    x, target=targets[start : start + batch_size], relu_attributions=True
                )
                up = LayerAttribution.interpolate(attribution.float(), tuple(size), "bilinear")
                maps.append(up[:, 0].detach().cpu().numpy())
    finally:
        model.train(was_training)
    out = np.concatenate(maps) if maps else np.zeros((0, *size), dtype=np.float32)
    peak = out.reshape(len(out), -1).max(axis=1, initial=0.0) if len(out) else np.zeros(0)
    return np.divide(
        out, peak[:, None, None], out=np.zeros_like(out), where=peak[:, None, None] > 0
    )


def gradcam_png(
    model: nn.Module,
    images_uint8: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    predictions: Sequence[int] | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[str],
    path: Path,
    device: str | torch.device | None = None,
    n: int = 8,
    *,
    name: str | None = None,
    resize: int = 1,
) -> Path | None:
    """The first ``n`` images (pass the most confidently wrong ones) in pairs: the image,
    then its Grad-CAM map for the predicted class over it, titled true / predicted.

    Returns None, with a ``GradCamSkipped`` warning naming the model (``name``, e.g.
    ``se_resnet18``, else its class), when it has no convolutional feature map, and None
    when there are no images."""
    images = np.asarray(images_uint8)[:n]
    if len(images) == 0:
        return None
    model = _unwrap(model)
    layer = target_layer(model, input_size=int(images.shape[-1]) * resize)
    if layer is None:
        warnings.warn(
            f"Grad-CAM skipped for model {name or type(model).__name__}: no convolutional "
            "feature map (a Conv2d block with an (N, C, H, W) output larger than 1x1 "
            "before the classifier)",
            GradCamSkipped,
            stacklevel=2,
        )
        return None
    predictions = [int(p) for p in predictions[: len(images)]]
    maps = gradcam_maps(
        model, images, predictions, mean, std, layer=layer, device=device, resize=resize
    )
    from search.reporting.figures import plt, save_png  # Agg backend, set there

    per_row = min(4, len(images))
    rows = math.ceil(len(images) / per_row)
    fig, axes = plt.subplots(
        rows, 2 * per_row, figsize=(2 * per_row * 1.6, rows * 2.3), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, heat) in enumerate(zip(images, maps)):
        row, col = divmod(k, per_row)
        picture = image.transpose(1, 2, 0)
        true, predicted = classes[int(labels[k])], classes[predictions[k]]
        left, right = axes[row][2 * col], axes[row][2 * col + 1]
        left.imshow(picture, interpolation="nearest")
        left.set_title(f"true: {true}\npred: {predicted}", fontsize=8)
        right.imshow(picture, interpolation="nearest")
        right.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        right.set_title(f"Grad-CAM\nfor {predicted}", fontsize=8)
    fig.suptitle(f"Grad-CAM of the predicted class ({name or type(model).__name__})")
    return save_png(fig, path)
