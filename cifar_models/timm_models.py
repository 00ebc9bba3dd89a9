"""``timm:<name>`` models, built on demand by ``registry.create``: any timm model, untrained,
with its classifier sized for ``num_classes`` and, where timm allows, its input size set to
the data's (``img_size``: a ViT, Mixer or Swin made for 224x224 built for 32x32). Imports
nothing from the registry (which imports this module when it meets a ``timm:`` name), so
the two form no cycle.

Whether a model works on an image size is only known by running it: some take ``img_size``
and some do not, some ignore it, some fail only in the forward pass. So each candidate
build is first tried on the meta device (shapes only: no memory, no arithmetic, no draw
from the random generator), one image through it; the real model is built once, with the
arguments that passed. A model that fits no way gets a one-line ModelConfigError that
says which ``aug.resize`` makes it fit; any other error of timm's is one line too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .catalog import TIMM_PREFIX
from .errors import ModelConfigError

# CIFAR's images are 32x32; the search's ``aug.resize`` (an integer from 1 to 8) upsamples
# them to 32 * resize pixels a side.
BASE_SIDE = 32
RESIZES = range(1, 9)

# A probe that failed because the meta device cannot run something (a value read out of a
# tensor), not because of the image size: it says nothing about the model.
_META_ONLY = re.compile(r"meta tensor|'meta' backend|meta device", re.IGNORECASE)


class _BuildFailed(Exception):
    """timm could not construct the model (whatever the input size); the cause is timm's."""


def create_timm_model(
    timm_name: str, num_classes: int, knobs: dict[str, object], image_size: int = BASE_SIDE
) -> nn.Module:
    """Build ``timm:<timm_name>`` untrained for ``image_size`` x ``image_size`` input;
    ``knobs`` are already validated (only ``dropout``). Every failure is a one-line
    ModelConfigError naming the model."""
    name = TIMM_PREFIX + timm_name
    try:
        import timm
    except ImportError:
        message = f"{name} needs the optional 'timm' extra: pip install -e '.[timm]'"
        raise ModelConfigError(message, key="name", value=name) from None
    if not timm.is_model(timm_name):
        message = f"unknown timm model {timm_name!r} in {name!r}; see timm.list_models()"
        raise ModelConfigError(message, key="name", value=name)
    args = {"pretrained": False, "num_classes": num_classes, "drop_rate": knobs.get("dropout", 0.0)}
    try:
        fit = _Fit(timm, timm_name, args)
        fitted = fit.args_for(image_size)
        if fitted is None:
            raise fit.size_error(image_size)
        return timm.create_model(timm_name, **fitted)
    except ModelConfigError:
        raise
    except Exception as exc:  # timm's own error, whatever it is: one line, no traceback
        cause = exc.__cause__ if isinstance(exc, _BuildFailed) and exc.__cause__ else exc
        message = f"timm could not build {name}: {_one_line(cause)}"
        raise ModelConfigError(message, key="name", value=name) from None


class _Fit:
    """Which ``create_model`` arguments make one timm model take square images of a given
    side, found on the meta device: ``img_size = side`` where the model takes it, else
    timm's defaults (built once and run at every side asked about)."""

    def __init__(self, timm: Any, timm_name: str, args: dict[str, Any]) -> None:
        self.timm, self.timm_name, self.args = timm, timm_name, args
        self.takes_img_size = True  # until a build with it fails
        self._plain: nn.Module | None = None
        self._plain_unknown = False  # the meta device could not build it: no probe

    def args_for(self, side: int) -> dict[str, Any] | None:
        """The arguments for ``side`` x ``side`` images, None if no way fits. Raises
        _BuildFailed where timm cannot build the model at all."""
        if self.takes_img_size:
            sized = {**self.args, "img_size": side}
            if self._sized_failure(sized, side) is None:
                return sized
        return self.args if self.plain_failure(side) is None else None

    def plain_failure(self, side: int) -> Exception | None:
        """Why timm's default build cannot take a ``side`` x ``side`` image (None if it
        can, or when the meta device cannot tell)."""
        if self._plain is None and not self._plain_unknown:
            with _meta():
                try:
                    self._plain = self.timm.create_model(self.timm_name, **self.args)
                except Exception as exc:
                    if not _META_ONLY.search(str(exc)):
                        raise _BuildFailed from exc  # no image size involved
                    self._plain_unknown = True
        return None if self._plain is None else _run(self._plain, side)

    def _sized_failure(self, sized: dict[str, Any], side: int) -> Exception | None:
        with _meta():
            try:
                model = self.timm.create_model(self.timm_name, **sized)
            except Exception as exc:
                if _META_ONLY.search(str(exc)):
                    return None
                self.takes_img_size = False  # most likely no such argument
                return exc
        return _run(model, side)

    def size_error(self, side: int) -> ModelConfigError:
        """The error for a model that cannot take ``side`` x ``side`` images: timm's reason
        and the smallest ``aug.resize`` that makes it fit, or that none does."""
        name = TIMM_PREFIX + self.timm_name
        reason = self.plain_failure(side)  # the error timm gives the model as it comes
        why = f" ({_one_line(reason)})" if reason is not None else ""
        sides = [BASE_SIDE * resize for resize in RESIZES]
        fits = next((s for s in sides if s != side and self.args_for(s) is not None), None)
        if fits is None:
            hint = f"no aug.resize makes it fit ({sides[0]}x{sides[0]} to {sides[-1]}x{sides[-1]})"
        else:
            hint = f"set aug.resize = {fits // BASE_SIDE} ({fits}x{fits} images) to train it"
        message = f"{name} cannot take {side}x{side} images{why}; {hint}"
        return ModelConfigError(message, key="name", value=name)


@contextmanager
def _meta() -> Iterator[None]:
    """Build on the meta device, leaving the random generator as it was."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        yield


def _run(model: nn.Module, side: int) -> Exception | None:
    """Why ``model`` (on the meta device) cannot take one ``side`` x ``side`` image."""
    model.eval()
    try:
        with torch.no_grad(), torch.device("meta"):
            model(torch.zeros(1, 3, side, side))
    except Exception as exc:
        return None if _META_ONLY.search(str(exc)) else exc
    return None


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type where its text is empty."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
