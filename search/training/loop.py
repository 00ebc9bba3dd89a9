"""``train_one``: one training run of a ``TrialConfig`` on device-resident data.

No Optuna and no MLflow here: the search reports and logs through ``on_epoch``. The
epoch loop keeps running sums on the device and syncs with the host once per epoch, so a
GPU is never waiting on Python between steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import cifar_models
from search.config import TrialConfig
from search.errors import ConfigError
from search.training import device as device_mod
from search.training.augment import AugmentPlan, BatchAugment
from search.training.device import autocast, peak_memory_mb
from search.training.evaluate import EvalReport, evaluate, quick_eval
from search.training.run_state import (
    Checkpointing,
    EpochProgress,
    EpochStats,
    RunProgress,
    SaveBehind,
    StopRequested,
)
from search.training.splits import TrainData


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run diverged."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step
        super().__init__(
            f"loss became NaN/inf at epoch {epoch}, step {step} (diverged: "
            f"lower optim.lr or set optim.grad_clip)"
        )


@dataclass
class TrainResult:
    config: TrialConfig
    history: list[EpochStats]
    final: EvalReport
    n_params: int
    train_seconds: float
    peak_memory_mb: float
    device: str
    stop_reason: str | None = None
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


# Every dataset's images are 32x32 (datasets.py); aug.resize upsamples them by its factor.
IMAGE_SIDE = 32


def build_model(cfg: TrialConfig, num_classes: int) -> torch.nn.Module:
    """``cifar_models.create`` with the config's knobs, for the images the model will see
    (a ``timm:`` model is built for their size); its errors become ConfigErrors."""
    image_size = IMAGE_SIDE * cfg.aug.resize
    try:
        return cifar_models.create(
            cfg.model.name, num_classes, image_size=image_size, **cfg.model.model_args()
        )
    except cifar_models.ModelConfigError as exc:
        key = "model.name" if exc.key == "name" else f"model.{exc.key}"
        raise ConfigError(str(exc), key=key) from None


# Compiled models of this worker process, per architecture: torch.compile costs minutes on
# a GPU, so a search compiles each architecture once and reuses the graph across trials.
# (Recent dynamo also reuses a graph for a new module whose guards match; the cache makes
# reuse independent of that.) Least recently used first; bounded, since every entry holds
# a model on the device.
_COMPILED: OrderedDict[tuple, tuple[torch.nn.Module, torch.nn.Module]] = OrderedDict()
_COMPILED_MAX = 8

# torch.compile's modes that replay the step as CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

# Dynamo compiles a new graph for every distinct architecture, batch size or dropout value
# it meets and, past its default limits (8 per function, 256 in all), silently trains the
# rest of the search eagerly. A long search meets many more.
_RECOMPILE_LIMIT = 256
_ACCUMULATED_RECOMPILE_LIMIT = 4096


def _model_for(
    cfg: TrialConfig, num_classes: int, device: torch.device, memory_format: torch.memory_format
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model, the module to call in the training step): the same module, or with
    ``runtime.compile`` a cached compiled one loaded with this run's fresh weights."""
    model = build_model(cfg, num_classes).to(device, memory_format=memory_format)
    if not cfg.runtime.compile:
        return model, model
    key = (
        cfg.runtime.compile_mode,
        cfg.model.name,
        tuple(sorted(cfg.model.model_args().items())),
        num_classes,
        cfg.aug.resize,  # a timm model's input size is part of its graph
        str(device),
        memory_format,
    )
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        cached, compiled = _COMPILED[key]
        cached.load_state_dict(model.state_dict())  # this seed's initial weights, same graph
        # the last trial's gradients may be CUDA-graph memory that later steps overwrite
        cached.zero_grad(set_to_none=True)
        return cached, compiled
    _raise_recompile_limit()
    _COMPILED[key] = (model, torch.compile(model, mode=cfg.runtime.compile_mode))
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return _COMPILED[key]


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    # older torch releases name them cache_size_limit and accumulated_cache_size_limit
    for new_name, old_name, limit in (
        ("recompile_limit", "cache_size_limit", _RECOMPILE_LIMIT),
        (
            "accumulated_recompile_limit",
            "accumulated_cache_size_limit",
            _ACCUMULATED_RECOMPILE_LIMIT,
        ),
    ):
        name = new_name if hasattr(config, new_name) else old_name
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))


def _optimizer(
    cfg: TrialConfig, model: torch.nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    o = cfg.optim
    fused = {"fused": True} if device.type == "cuda" else {}
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov and o.momentum > 0,
            **fused,
        )
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=(o.momentum, 0.999), weight_decay=o.weight_decay, **fused)


def lr_factor(cfg: TrialConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of ``optim.lr`` at optimizer step ``step`` (0-based) for the
    cosine, multistep and none schedules, after a linear warm-up."""
    s = cfg.schedule
    warmup = min(int(round(s.warmup_epochs * steps_per_epoch)), total_steps - 1)
    if step < warmup:
        return (step + 1) / warmup
    if s.name == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if s.name == "multistep":
        passed = sum(step >= m * total_steps for m in s.milestones)
        return s.gamma**passed
    return 1.0


def _scheduler(
    cfg: TrialConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    total = cfg.optim.epochs * steps_per_epoch
    if cfg.schedule.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.optim.lr, total_steps=total
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, min(step, total - 1), total, steps_per_epoch)
    )


def train_one(
    cfg: TrialConfig,
    data: TrainData,
    on_epoch: Callable[[EpochStats], bool | None] | None = None,
    checkpointing: Checkpointing | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``data.train_*`` and evaluate on ``data.eval_*``.

    ``on_epoch(stats)`` is called after every epoch; it may raise (e.g. Optuna's
    TrialPruned) or return True to stop training early. With ``runtime.patience`` and a
    validation split, training stops when validation accuracy has not improved for that
    many epochs. Raises ``NonFiniteLossError`` when the loss diverges.

    ``checkpointing`` (``run_state``): states to save and one to start from. A run started
    from a state first passes the restored epochs to ``on_epoch`` (``stats.restored``), then
    continues at the saved batch: the same code and the same computation as a run that was
    never stopped. When ``checkpointing.stop_requested()`` turns True, the state at the
    next batch boundary is saved and ``StopRequested`` raised.
    """
    ck = checkpointing or Checkpointing()
    device = data.train_x.device
    torch.manual_seed(cfg.runtime.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.runtime.seed)
    if device.type == "cuda":
        device_mod.configure_cuda(cfg)
        torch.cuda.reset_peak_memory_stats(device)
    channels_last = cfg.runtime.channels_last and device.type in device_mod.FAST_PATH_DEVICES
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    model, step_model = _model_for(cfg, data.num_classes, device, memory_format)
    # CUDA graphs (reduce-overhead, max-autotune) reuse their output buffers: each step says
    # it is a new one, so that the previous step's logits may be overwritten.
    graphed = cfg.runtime.compile and cfg.runtime.compile_mode in CUDA_GRAPH_MODES
    augment = BatchAugment(
        AugmentPlan.from_config(cfg.aug), data.mean, data.std, device, channels_last
    )
    n_train = data.train_x.shape[0]
    batch_size = min(cfg.optim.batch_size, n_train)
    steps_per_epoch = n_train // batch_size
    optimizer = _optimizer(cfg, model, device)
    scheduler = _scheduler(cfg, optimizer, steps_per_epoch)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    validate = data.eval_split == "val"

    run = RunProgress()
    if ck.start is not None:
        try:
            run = RunProgress.restore(ck.start, model, optimizer, scheduler, generator, device)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            if ck.on_bad_start is not None:
                ck.on_bad_start(exc)
            # the modules may be half-loaded: build them all again, from epoch 1
            return train_one(cfg, data, on_epoch, dataclasses.replace(ck, start=None))
        for stats in run.history:  # the restored curve, to the pruner and the logs first
            if on_epoch is not None:
                on_epoch(dataclasses.replace(stats, restored=True))

    # An epoch's checkpoint is written while the next epoch trains (and joined before that
    # one is reported); the last one, and one taken at a stop, before train_one goes on.
    writer = SaveBehind(ck.save) if ck.save is not None else None

    def save(wait: bool = True) -> None:
        if writer is not None:
            writer.submit(lambda: run.as_state(model, optimizer, scheduler, generator), wait=wait)

    try:
        started = time.perf_counter() - run.train_seconds
        while not run.done and run.epoch <= cfg.optim.epochs:
            epoch = run.epoch
            epoch_start = time.perf_counter()
            model.train()
            if run.current is None:
                run.current = EpochProgress(
                    order=torch.randperm(n_train, device=device, generator=generator),
                    loss_sum=torch.zeros((), device=device),
                    correct=torch.zeros((), device=device, dtype=torch.long),
                    first_bad_step=torch.full((), -1, device=device, dtype=torch.long),
                    lr=optimizer.param_groups[0]["lr"],
                    seconds=0.0,
                )
            cur = run.current
            for step in range(run.step, steps_per_epoch):
                if ck.stop_requested():
                    run.step = step
                    cur.seconds += time.perf_counter() - epoch_start
                    run.train_seconds = time.perf_counter() - started
                    save()
                    raise StopRequested(f"stopped at epoch {epoch}, batch {step}")
                idx = cur.order[step * batch_size : (step + 1) * batch_size]
                inputs, targets = (
                    augment.train_batch(data.train_x[idx], generator),
                    data.train_y[idx],
                )
                if graphed:
                    torch.compiler.cudagraph_mark_step_begin()
                with autocast(cfg, device):
                    logits = step_model(inputs)
                loss = criterion(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                scheduler.step()
                # Running sums stay on the device: no host sync inside the epoch.
                batch_loss = loss.detach()
                cur.loss_sum += batch_loss * batch_size
                cur.correct += (logits.argmax(1) == targets).sum()
                cur.first_bad_step = torch.where(
                    (cur.first_bad_step < 0) & ~torch.isfinite(batch_loss), step, cur.first_bad_step
                )
            seen = steps_per_epoch * batch_size
            total_loss, total_correct, bad_step = torch.stack(
                [cur.loss_sum, cur.correct.float(), cur.first_bad_step.float()]
            ).tolist()
            if bad_step >= 0:
                raise NonFiniteLossError(epoch, int(bad_step))
            seconds = cur.seconds + time.perf_counter() - epoch_start
            # Evaluation runs the eager model: compiling its eval-mode graph, and again for the
            # last, smaller batch, would cost more compile time than it saves.
            val = quick_eval(model, augment, data, cfg, device) if validate else {}
            stats = EpochStats(
                epoch=epoch,
                train_loss=total_loss / seen,
                train_acc=total_correct / seen,
                lr=cur.lr,
                seconds=seconds,
                images_per_s=seen / seconds,
                **val,
            )
            run.history.append(stats)
            if writer is not None:
                # the previous epoch's write is done before this one is reported: a kill
                # from here on loses one reported epoch at most, as with a write in line
                writer.wait()
            run.epoch, run.step, run.current = epoch + 1, 0, None
            if on_epoch is not None and on_epoch(stats):
                run.stop_reason = f"stopped by callback after epoch {epoch}"
            elif validate and cfg.runtime.patience:
                if stats.val_acc > run.best_val:
                    run.best_val, run.epochs_since_best = stats.val_acc, 0
                else:
                    run.epochs_since_best += 1
                    if run.epochs_since_best >= cfg.runtime.patience:
                        run.stop_reason = (
                            f"early stopping: no val_acc gain for {run.epochs_since_best} epochs"
                        )
            run.done = run.stop_reason is not None or epoch >= cfg.optim.epochs
            run.train_seconds = time.perf_counter() - started
            # The last state is always kept: a finished run is evaluated again, never retrained.
            if run.done or (ck.every and epoch % ck.every == 0):
                save(wait=run.done)  # the last one is written before the run reports back
    finally:
        # an exception (pruned, diverged) leaves no write running behind it: the caller
        # may remove the run's checkpoints next
        if writer is not None:
            writer.join()
    train_seconds = run.train_seconds
    final = evaluate(
        model, augment, data.eval_x, data.eval_y, data.classes, data.eval_split, cfg, device
    )
    return TrainResult(
        config=cfg,
        history=run.history,
        final=final,
        n_params=cifar_models.count_parameters(model),
        train_seconds=train_seconds,
        peak_memory_mb=peak_memory_mb(device),
        device=str(device),
        stop_reason=run.stop_reason,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
    )
