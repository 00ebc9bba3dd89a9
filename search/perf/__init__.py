from search.perf.bench import (
    BenchResult,
    Span,
    aggregate_images_per_s,
    bench_config,
    bf16_peak_flops,
    concurrent_throughput,
    measure_models,
    measure_ours,
    run_bench,
    train_flops_per_image,
)
from search.perf.fast_path_check import FAST, FP32, ArmRun, FastPathCheck, check_fast_path

__all__ = [
    "ArmRun",
    "BenchResult",
    "FAST",
    "FP32",
    "FastPathCheck",
    "Span",
    "aggregate_images_per_s",
    "bench_config",
    "bf16_peak_flops",
    "check_fast_path",
    "concurrent_throughput",
    "measure_models",
    "measure_ours",
    "run_bench",
    "train_flops_per_image",
]
