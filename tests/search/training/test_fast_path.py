"""The fast training path: no host syncs inside an epoch, the CUDA code path (bf16 +
channels_last), and compiled models reused across trials.

The CPU tests run the CUDA code path by widening ``FAST_PATH_DEVICES`` and count host syncs
with a TorchFunctionMode (every tensor method call) and a TorchDispatchMode (every ATen op);
the ``gpu`` tests check the same on a real GPU and are skipped on machines without one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from search.config import TrialConfig
from search.training import datasets as data
from search.training import loop as train_mod
from search.training import splits, train_one
from search.training.protocols import make_fold

TINY = {
    "data.dataset": "synthetic",
    "data.synthetic_size": 400,
    "data.synthetic_classes": 4,
    "model.name": "improved_cnn",
    "model.width": 0.25,
    "optim.epochs": 2,
    "optim.batch_size": 45,
    "optim.lr": 0.05,
    "aug.preset": "full",
    "runtime.device": "cpu",
}

# Calls that make the host wait for the device. Tensor methods that read values on the
# host, seen by a TorchFunctionMode (``.to()`` is left out: on a CPU, ``.to(device)`` and
# ``.to("cpu")`` cannot be told apart) ...
HOST_READS = {"tolist", "numpy", "cpu"}
# ... and ATen ops whose output size or value the host must know, seen by a
# TorchDispatchMode (``.item()``, ``bool(t)``, boolean-mask indexing, nonzero, unique).
aten = torch.ops.aten
SYNCING_OPS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
}
MASK_INDEXING_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default}


def _cfg(**flat) -> TrialConfig:
    return TrialConfig.from_flat({**TINY, **flat})


def _holdout(cfg: TrialConfig, device: str = "cpu") -> splits.TrainData:
    ds = data.load(
        "synthetic",
        synthetic_size=cfg.data.synthetic_size,
        synthetic_classes=cfg.data.synthetic_classes,
    )
    return make_fold(cfg.with_overrides({"runtime.device": device}), ds, 0)


class _MethodSpy(TorchFunctionMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


class _OpSpy(TorchDispatchMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPS or (
            func in MASK_INDEXING_OPS
            and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        ):
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs():
    """Yields the list of host-syncing calls made inside the block."""
    calls: list[str] = []
    with _MethodSpy(calls), _OpSpy(calls):
        yield calls


def _host_syncs(cfg: TrialConfig) -> tuple[int, int]:
    """(host syncs of a whole train_one call, its steps per epoch)."""
    td = _holdout(cfg)
    with count_host_syncs() as calls:
        train_one(cfg, td)
    return len(calls), td.train_x.shape[0] // cfg.optim.batch_size


@pytest.mark.parametrize("fast_path", [False, True], ids=["cpu-path", "cuda-path"])
def test_host_syncs_do_not_grow_with_steps_per_epoch(fast_path, request):
    if fast_path:
        request.getfixturevalue("cuda_path_on_cpu")
    few, few_steps = _host_syncs(_cfg(**{"optim.batch_size": 180}))
    many, many_steps = _host_syncs(_cfg(**{"optim.batch_size": 45, "optim.grad_clip": 1.0}))
    assert (few_steps, many_steps) == (2, 8)
    # Per-epoch metrics and the final evaluation sync; a per-step .item() would add 12.
    assert few == many > 0


def test_cuda_code_path_learns_with_bf16_and_channels_last(cuda_path_on_cpu):
    cfg = _cfg(**{"optim.epochs": 4, "aug.preset": "none"})
    fast = train_one(cfg, _holdout(cfg))
    plain = train_one(
        cfg.with_overrides({"runtime.bf16": False, "runtime.channels_last": False}), _holdout(cfg)
    )
    assert fast.history[-1].train_loss < fast.history[0].train_loss
    assert fast.final.accuracy > 0.5  # chance is 0.25
    conv_weights = [v for v in fast.state_dict.values() if v.dim() == 4]
    assert conv_weights and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        for w in conv_weights
    )
    assert all(w.is_contiguous() for w in plain.state_dict.values() if w.dim() == 4)
    # bf16 rounds activations, so the two runs' numbers differ; both learn.
    assert fast.history[0].train_loss != plain.history[0].train_loss
    assert plain.final.accuracy > 0.5


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with a backend that runs the captured graphs as they are (no inductor,
    so no C++ build), recording each compile call and each graph it captures."""
    real_compile = torch.compile
    record = {"compiled": [], "modes": [], "graphs": 0}

    def backend(gm, example_inputs):
        record["graphs"] += 1
        return gm.forward

    def counting_compile(model, **kwargs):
        record["compiled"].append(model)
        record["modes"].append(kwargs.get("mode"))
        return real_compile(model, backend=backend)

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", counting_compile)
    monkeypatch.setattr(train_mod, "_COMPILED", OrderedDict())
    yield record
    torch._dynamo.reset()


def test_compiled_model_is_reused_across_trials_with_fresh_weights(eager_compile):
    cfg = _cfg(**{"runtime.compile": True, "aug.preset": "none"})
    train_one(cfg, _holdout(cfg))
    graphs = eager_compile["graphs"]
    assert len(eager_compile["compiled"]) == 1 and graphs >= 1
    second = cfg.with_overrides({"runtime.seed": 1})
    reused = train_one(second, _holdout(cfg))
    # Same architecture: no second compile, and no graph traced again.
    assert len(eager_compile["compiled"]) == 1 and eager_compile["graphs"] == graphs
    # The reused module starts from seed 1's initial weights, not from the first trial's
    # trained ones: its run matches a fresh uncompiled run of seed 1.
    fresh = train_one(second.with_overrides({"runtime.compile": False}), _holdout(cfg))
    assert [s.train_loss for s in reused.history] == pytest.approx(
        [s.train_loss for s in fresh.history], rel=1e-5
    )
    assert reused.final.accuracy == pytest.approx(fresh.final.accuracy)
    train_one(cfg.with_overrides({"model.width": 0.5}), _holdout(cfg))
    assert len(eager_compile["compiled"]) == 2  # another architecture compiles once more


def test_each_compile_mode_is_compiled_once_and_reused(eager_compile, monkeypatch):
    cfg = _cfg(
        **{
            "runtime.compile": True,
            "runtime.compile_mode": "default",
            "optim.epochs": 1,
            "aug.preset": "none",
        }
    )
    graphed = cfg.with_overrides({"runtime.compile_mode": "reduce-overhead"})
    marks = []
    real_mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(
        torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1) or real_mark()
    )
    steps = _holdout(cfg).train_x.shape[0] // cfg.optim.batch_size
    counted = []
    for run in (cfg, graphed, graphed.with_overrides({"runtime.seed": 1}), cfg):
        train_one(run, _holdout(cfg))
        counted.append(len(marks))
    # the mode reaches torch.compile, and a model compiled in one mode is never reused for
    # a run that asked for another
    assert eager_compile["modes"] == ["default", "reduce-overhead"]
    # CUDA graphs overwrite their outputs: each step of a graphed run says it is a new one
    assert counted == [0, steps, 2 * steps, 2 * steps]


def test_many_architectures_keep_compiling_and_the_cache_stays_bounded(eager_compile, monkeypatch):
    # Dynamo's own limit set low, as if the search had already met that many graphs: past
    # it dynamo would quietly train the remaining trials eagerly.
    config = torch._dynamo.config
    monkeypatch.setattr(
        config, "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit", 2
    )
    monkeypatch.setattr(train_mod, "_COMPILED_MAX", 2)
    dropouts = [0.0, 0.1, 0.2, 0.3]
    graphs = []
    for p in dropouts:
        cfg = _cfg(
            **{"runtime.compile": True, "model.dropout": p, "optim.epochs": 1, "aug.preset": "none"}
        )
        train_one(cfg, _holdout(cfg))
        graphs.append(eager_compile["graphs"])
    assert len(eager_compile["compiled"]) == len(dropouts)
    # Every new dropout value got compiled graphs of its own.
    assert all(b > a for a, b in zip(graphs, graphs[1:]))
    assert len(train_mod._COMPILED) == 2


def _cuda_syncs(cfg: TrialConfig) -> int:
    td = _holdout(cfg, "cuda")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_one(cfg, td)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
def test_cuda_epoch_loop_syncs_once_per_epoch_not_per_step():
    _cuda_syncs(_cfg(**{"runtime.device": "cuda"}))  # one-off syncs of CUDA's first use
    few = _cuda_syncs(_cfg(**{"runtime.device": "cuda", "optim.batch_size": 180}))
    many = _cuda_syncs(
        _cfg(**{"runtime.device": "cuda", "optim.batch_size": 45, "optim.grad_clip": 1.0})
    )
    assert few == many > 0


@pytest.mark.gpu
def test_cuda_bf16_and_fp32_both_learn():
    cfg = _cfg(**{"runtime.device": "cuda", "optim.epochs": 4, "aug.preset": "none"})
    bf16 = train_one(cfg, _holdout(cfg, "cuda"))
    fp32 = train_one(cfg.with_overrides({"runtime.bf16": False}), _holdout(cfg, "cuda"))
    assert bf16.final.accuracy > 0.5 and fp32.final.accuracy > 0.5
    assert bf16.device.startswith("cuda") and bf16.peak_memory_mb > 0


@pytest.mark.gpu
def test_cuda_compiled_trials_reuse_the_graph(monkeypatch):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    monkeypatch.setattr(train_mod, "_COMPILED", OrderedDict())
    cfg = _cfg(
        **{
            "runtime.device": "cuda",
            "runtime.compile": True,
            "optim.epochs": 3,
            "aug.preset": "none",
        }
    )
    first = train_one(cfg, _holdout(cfg, "cuda"))
    graphs = counters["stats"]["unique_graphs"]
    second = train_one(cfg.with_overrides({"runtime.seed": 1}), _holdout(cfg, "cuda"))
    assert graphs > 0 and counters["stats"]["unique_graphs"] == graphs  # nothing recompiled
    assert len(train_mod._COMPILED) == 1
    assert first.final.accuracy > 0.5 and second.final.accuracy > 0.5


@pytest.mark.gpu
def test_cuda_graphs_of_reduce_overhead_train_like_the_default_compile(monkeypatch):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(train_mod, "_COMPILED", OrderedDict())
    cfg = _cfg(
        **{
            "runtime.device": "cuda",
            "runtime.compile": True,
            "runtime.compile_mode": "default",
            "aug.preset": "none",
        }
    )
    graphed = cfg.with_overrides({"runtime.compile_mode": "reduce-overhead"})
    try:
        # seed 1 trains the models compiled for seed 0 again, loaded with its own weights
        runs = [
            [
                train_one(c.with_overrides({"runtime.seed": seed}), _holdout(cfg, "cuda"))
                for c in (cfg, graphed)
            ]
            for seed in (0, 1)
        ]
        # the step really ran as CUDA graphs: inductor recorded graphs (each records the
        # batch as an input it copies in) and declined none
        assert counters["inductor"]["cudagraph_recorded_non_static_inputs"] > 0
        assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])
        # replaying the same kernels: the same training, up to the order of float sums
        for default, replayed in runs:
            assert [s.train_loss for s in replayed.history] == pytest.approx(
                [s.train_loss for s in default.history], rel=1e-2
            )
        assert len(train_mod._COMPILED) == 2  # one module per mode, each compiled once
    finally:
        torch._dynamo.reset()  # the graphs and their memory go with this test
