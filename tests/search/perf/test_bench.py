"""``bench``'s measurement plumbing on the CPU: what is timed, how concurrent processes are
aggregated, and the command's table. The figures themselves are benchmarks, not tested."""

from __future__ import annotations

import os
import re
import time

import forkserver
import pytest
from click.testing import CliRunner

from cli import main
from search.perf import (
    BenchResult,
    Span,
    aggregate_images_per_s,
    bench_config,
    bf16_peak_flops,
    measure_ours,
    train_flops_per_image,
)


def test_side_by_side_spans_add_up():
    spans = [Span(1000, 10.0, 12.0), Span(1000, 10.0, 12.0)]
    assert aggregate_images_per_s(spans) == 1000.0


def test_spans_at_different_times_are_not_credited_as_concurrent():
    # Each process ran at 500 img/s, one after the other: summing the rates would claim
    # 1000 img/s; over the common window it is 500.
    spans = [Span(1000, 0.0, 2.0), Span(1000, 2.0, 4.0)]
    assert aggregate_images_per_s(spans) == 500.0


class _Ready:
    """Stands in for the processes' barrier: notes when it is waited on."""

    def __init__(self) -> None:
        self.waited: list[float] = []

    def wait(self) -> None:
        self.waited.append(time.monotonic())


def test_measure_ours_times_only_the_epochs_after_warm_up():
    cfg = bench_config("improved_cnn", 16, "cpu", model_args={"width": 0.25})
    ready = _Ready()
    before = time.monotonic()
    span, peak_mb = measure_ours(cfg, steps=3, timed_epochs=2, ready=ready)
    assert span.images == 2 * 3 * 16 and peak_mb > 0
    # The barrier is waited on once, after the warm-up epoch, and timing starts after it.
    assert len(ready.waited) == 1 and before < ready.waited[0] <= span.start < span.end


def test_mfu_peaks_match_whole_gpu_names_only():
    assert bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak_flops("NVIDIA L40S") == 362e12
    assert bf16_peak_flops("NVIDIA A10G") is None  # not an A10: no MFU rather than a wrong one


def test_training_flops_of_resnet20_match_its_size():
    # ResNet20 needs about 41 MFLOP multiply-adds forward, i.e. 82 MFLOP, and backward
    # twice that: about 0.25 GFLOP per training image.
    flops = train_flops_per_image(bench_config("resnet20", 8, "cpu"))
    assert 0.2e9 < flops < 0.3e9


BENCH = [
    "bench",
    "--model",
    "improved_cnn",
    "--width",
    "0.25",
    "--batch-size",
    "16",
    "--steps",
    "2",
    "--device",
    "cpu",
]


def test_bench_command_prints_ours_against_the_reference():
    result = CliRunner().invoke(main, BENCH)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("model "))
    for column in ("ours img/s", "reference img/s", "ratio", "peak MB", "GFLOP/img", "MFU"):
        assert column in header
    row = next(line for line in lines if line.startswith("improved_cnn  cpu"))
    assert row.split()[-1] == "-"  # no MFU on a CPU: there is no bf16 peak to divide by


@pytest.mark.slow
def test_bench_concurrency_prints_aggregate_throughput():
    result = CliRunner().invoke(main, [*BENCH, "--concurrency", "1,2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("aggregate"))) + 1 :]
    assert table[0].split() == ["model", "N=1", "N=2"]
    assert table[2].startswith("improved_cnn") and "(1.00x)" in table[2]
    assert not any("reference" in line for line in lines)
    # each process count said as soon as it is measured
    assert re.search(r"measured improved_cnn, 1 process: [\d,]+ img/s in all", result.stderr)
    assert re.search(r"measured improved_cnn, 2 processes: [\d,]+ img/s in all", result.stderr)


@pytest.mark.parametrize(
    "args, mode",
    [
        ([], None),
        (["--compile"], "reduce-overhead"),  # runtime.compile_mode's default
        (["--compile", "--steps", "3"], "reduce-overhead"),  # an option after it is not a mode
        (["--compile", "default"], "default"),
        (["--compile=max-autotune"], "max-autotune"),
    ],
)
def test_bench_compile_takes_an_optional_mode(monkeypatch, args, mode):
    import search.perf

    asked = []

    def measured(models, batch_size, device, steps, compile_mode, *rest, **kwargs):
        asked.append(compile_mode)
        cfg = bench_config(models[0], batch_size, device, compile_mode=compile_mode)
        assert cfg.runtime.compile == (mode is not None)
        return {models[0]: BenchResult(models[0], 8, "cpu", 2.0, 1.0, 1.0, 1.0, 1e9, None, mode)}

    monkeypatch.setattr(search.perf, "measure_models", measured)
    result = CliRunner().invoke(main, ["bench", "--model", "resnet20", *args])
    assert result.exit_code == 0, result.output
    assert asked == [mode]
    row = next(line for line in result.output.splitlines() if line.startswith("resnet20"))
    assert row.startswith("resnet20 compiled " + mode if mode else "resnet20  ")


def test_bench_names_an_unknown_compile_mode():
    result = CliRunner().invoke(main, ["bench", "--compile", "fast", "--model", "resnet20"])
    assert result.exit_code == 2
    assert "runtime.compile_mode = 'fast'" in result.output
    assert "reduce-overhead" in result.output


def test_a_bench_stopped_by_a_time_limit_has_shown_what_it_measured(tmp_path):
    # A job's time limit (SIGTERM) while the second model is timed: the first model's
    # figures were printed when it was measured, not kept for a table at the end.
    args = [*BENCH, "--steps", "6"]
    args[args.index("--model") + 1] = "improved_cnn,resnet110"
    child = forkserver.spawn_cli(args, tmp_path, {**os.environ, "CIFAR_SEARCH_HOME": str(tmp_path)})
    deadline = time.monotonic() + 120
    while "measured improved_cnn" not in child.output()[1]:
        assert child.poll() is None and time.monotonic() < deadline, child.output()
        time.sleep(0.01)
    child.terminate()
    assert child.wait(timeout=60) == 143, child.output()
    stderr = child.output()[1]
    assert re.search(
        r"measured improved_cnn: ours [\d,]+ img/s, reference [\d,]+ img/s \([\d.]+x\)", stderr
    )
    assert "measured resnet110" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (SIGTERM): no table; see above"


@pytest.mark.gpu
def test_bench_on_cuda_reports_memory_and_mfu():
    result = CliRunner().invoke(
        main,
        ["bench", "--model", "resnet20", "--batch-size", "128", "--steps", "5", "--device", "cuda"],
    )
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("resnet20 "))
    assert row.split()[-1].endswith("%")
