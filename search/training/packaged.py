"""A trained classifier packaged for use outside the search: raw uint8 images in, class
probabilities out, with the dataset's normalisation inside the model.

``PackagedClassifier`` does exactly what a final evaluation does on the CPU in fp32
(``evaluate._logits`` with ``BatchAugment.eval_batch``): uint8 -> float / 255 -> the
``aug.resize`` upsampling -> ``(x - mean) / std`` -> the model in eval mode; then a softmax.
The same operations in the same order, so on the CPU, fed the test split in batches of
``runtime.eval_batch_size`` (``predict_proba``), the packaged model returns the evaluation's
probabilities bit for bit and reproduces the logged test accuracy exactly. Other batch sizes
may round differently in the last bits. A run evaluated on a GPU (bf16 autocast,
channels_last, other convolution kernels) can differ from its CPU fp32 package by a few
images.

Torch only, like the rest of the training layer; ``search.store.logged_model`` saves it to
MLflow as a ``torch.export`` program, which needs none of this code to load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from search.config import TrialConfig
from search.training.augment import AugmentPlan, normalise
from search.training.loop import build_model


class PackagedClassifier(torch.nn.Module):
    """``forward(images)``: uint8 ``(N, 3, H, W)`` -> float32 probabilities ``(N, C)``.

    ``mean`` and ``std`` (per channel, on the 0..1 scale) are buffers, so they travel with
    the weights; ``resize`` is ``aug.resize`` (the factor the model was trained at)."""

    def __init__(
        self,
        model: torch.nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        resize: int = 1,
    ) -> None:
        super().__init__()
        self.model = model
        # as BatchAugment builds them: float32 tensors shaped to broadcast over (N, C, H, W)
        self.register_buffer("mean", _channels(mean))
        self.register_buffer("std", _channels(std))
        self.resize = int(resize)
        self.eval()

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``BatchAugment.eval_batch`` (contiguous layout): the model's input."""
        return normalise(images, self.mean, self.std, self.resize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(self.normalise(images)).float(), dim=1)


def _channels(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1, 1)


def packaged_model(
    cfg: TrialConfig,
    num_classes: int,
    state_dict: Mapping[str, torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
) -> PackagedClassifier:
    """The trained model of ``cfg`` (``TrainResult.state_dict``) on the CPU in fp32 and eval
    mode, wrapped with the normalisation it was trained with (``Dataset.mean_std``)."""
    model = build_model(cfg, num_classes)
    model.load_state_dict(state_dict)
    model = model.to("cpu", torch.float32)
    resize = AugmentPlan.from_config(cfg.aug).resize
    return PackagedClassifier(model, mean, std, resize)


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Probabilities ``(N, C)`` of a packaged (or loaded) model for uint8 ``images``, in
    batches of ``batch_size`` (``runtime.eval_batch_size`` matches the evaluation's)."""
    x = torch.as_tensor(images)
    parts = [model(x[start : start + batch_size]) for start in range(0, x.shape[0], batch_size)]
    return torch.cat(parts)
