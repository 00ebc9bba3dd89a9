"""The sections of a ``TrialConfig`` (model, data, optim, schedule, aug, runtime): each key
with its type, default, validator and one-line meaning, and the augmentation presets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cifar_models

DATASETS = ("cifar10", "cifar100", "digits", "synthetic")
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("cosine", "onecycle", "multistep", "none")
# torch.compile's modes: reduce-overhead replays the step's kernels as CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# What each augmentation preset turns on; a toggle set explicitly in the config wins over it.
PRESETS: dict[str, dict[str, float | int | bool]] = {
    "none": dict(crop_padding=0, flip=False, jitter=0.0, erasing=0.0, rotation=0.0),
    "basic": dict(crop_padding=0, flip=True, jitter=0.0, erasing=0.0, rotation=0.0),
    "standard": dict(crop_padding=4, flip=True, jitter=0.0, erasing=0.0, rotation=0.0),
    "full": dict(crop_padding=4, flip=True, jitter=0.4, erasing=0.25, rotation=0.0),
}


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"expected one of {', '.join(allowed)}"


def _range(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
        if bad_lo or bad_hi or (isinstance(v, float) and not math.isfinite(v)):
            low = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}"
            high = f"{'inf' if hi is None else hi}{')' if hi_open else ']'}"
            return f"out of range {low}, {high}"
        return None

    return check


def _fractions(v: tuple[float, ...]) -> str | None:
    if any(not 0 < m < 1 for m in v) or list(v) != sorted(set(v)):
        return "expected increasing fractions of training in (0, 1), e.g. [0.5, 0.75]"
    return None


def _device(v: str) -> str | None:
    if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
        return None
    return "expected auto, cpu, cuda, cuda:N or mps"


def _model_knob(name: str) -> Callable[[Any], str | None]:
    """The check of model knob ``name``, owned by ``cifar_models`` (one validator per knob,
    shared by study files, ``--set``, config files and the model builders)."""

    def check(v: Any) -> str | None:
        try:
            cifar_models.check_knob(name, v)
        except cifar_models.ModelConfigError as exc:
            return exc.reason
        return None

    return check


def knob(default: Any, check: Callable[[Any], str | None] | None = None, doc: str = "") -> Any:
    """A config field with its validator and a one-line description (shown by the docs)."""
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class ModelConfig:
    name: str = knob("resnet18", None, "registered model name (`cli.py models`) or timm:<name>")
    attention: str | None = knob(
        None, _model_knob("attention"), "channel attention: se, eca or none"
    )
    se_reduction: int | None = knob(
        None, _model_knob("se_reduction"), "SE reduction ratio r (hidden = C // r)"
    )
    eca_kernel: int | None = knob(None, _model_knob("eca_kernel"), "ECA conv1d kernel size (odd)")
    ghost_ratio: int | None = knob(None, _model_knob("ghost_ratio"), "Ghost module ratio")
    dropout: float | None = knob(None, _model_knob("dropout"), "dropout before the classifier")
    width: float | None = knob(None, _model_knob("width"), "channel multiplier")
    pretrained: bool | None = knob(
        None, _model_knob("pretrained"), "ImageNet weights (efficientnet_b2 only)"
    )

    def model_args(self) -> dict[str, Any]:
        """The knobs that were set, as keyword arguments for ``cifar_models.create``."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class DataConfig:
    dataset: str = knob("cifar10", _choice(*DATASETS), "cifar10, cifar100, digits or synthetic")
    val_fraction: float = knob(
        0.1,
        _range(0, 1, lo_open=True, hi_open=True),
        "stratified validation share of the training split",
    )
    kfold: int = knob(0, _range(0), "k for stratified k-fold cross-validation (0 = holdout)")
    seed: int = knob(0, _range(0), "seed of the train/validation split")
    train_limit: int = knob(0, _range(0), "stratified subsample of the training split (0 = all)")
    synthetic_size: int = knob(2000, _range(20), "synthetic: training images (test = size // 5)")
    synthetic_classes: int = knob(10, _range(2), "synthetic: number of classes")


@dataclass(frozen=True)
class OptimConfig:
    name: str = knob("sgd", _choice(*OPTIMIZERS), "sgd, adamw or adam")
    lr: float = knob(0.1, _range(0, lo_open=True), "peak learning rate")
    momentum: float = knob(0.9, _range(0, 1, hi_open=True), "SGD momentum / Adam beta1")
    nesterov: bool = knob(True, None, "Nesterov momentum (SGD)")
    weight_decay: float = knob(5e-4, _range(0), "weight decay (decoupled for adamw)")
    batch_size: int = knob(128, _range(1), "training batch size")
    epochs: int = knob(30, _range(1), "training epochs")
    label_smoothing: float = knob(0.0, _range(0, 1, hi_open=True), "label smoothing")
    grad_clip: float = knob(0.0, _range(0), "max gradient norm (0 = off)")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = knob("cosine", _choice(*SCHEDULES), "cosine, onecycle, multistep or none")
    warmup_epochs: float = knob(0.0, _range(0), "linear warm-up (cosine, multistep, none)")
    milestones: tuple[float, ...] = knob(
        (0.5, 0.75), _fractions, "multistep: decay points as fractions of training"
    )
    gamma: float = knob(0.1, _range(0, 1, lo_open=True), "multistep: decay factor")


@dataclass(frozen=True)
class AugConfig:
    preset: str = knob("standard", _choice(*PRESETS), "none, basic, standard or full")
    crop_padding: int | None = knob(None, _range(0), "random crop with this padding (0 = off)")
    flip: bool | None = knob(None, None, "random horizontal flip")
    jitter: float | None = knob(None, _range(0, 1), "colour jitter strength (0 = off)")
    erasing: float | None = knob(None, _range(0, 1), "random erasing probability (0 = off)")
    rotation: float | None = knob(None, _range(0, 180), "random rotation, max degrees (0 = off)")
    resize: int = knob(1, _range(1, 8), "upsampling factor applied to every image (2: 64x64)")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = knob("auto", _device, "auto, cpu, cuda, cuda:N or mps")
    bf16: bool = knob(True, None, "bf16 autocast on CUDA")
    channels_last: bool = knob(True, None, "channels_last memory format on CUDA")
    compile: bool = knob(False, None, "torch.compile the model")
    compile_mode: str = knob(
        "reduce-overhead",
        _choice(*COMPILE_MODES),
        "torch.compile mode with runtime.compile (reduce-overhead: the step as CUDA graphs)",
    )
    patience: int = knob(0, _range(0), "early stopping on validation accuracy (0 = off)")
    seed: int = knob(0, _range(0), "training seed: init, order, augmentation")
    deterministic: bool = knob(
        False, None, "deterministic CUDA kernels: exact GPU reruns and resumes (slower)"
    )
    checkpoint_every: int = knob(
        1, _range(0), "write a checkpoint every N epochs, to continue a lost run (0 = off)"
    )
    keep_checkpoints: bool = knob(False, None, "keep a finished run's checkpoints")
    eval_batch_size: int = knob(1024, _range(1), "evaluation batch size")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "aug": AugConfig,
    "runtime": RuntimeConfig,
}
