"""Terminal text of ``search.perf``: the ``cli.py bench`` tables and the lines of
``cli.py check-fast-path``.

``search.perf`` sits beside the search stack, not below reporting: its results are read by
their attributes only, never imported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from search.reporting.text import pct, table

if TYPE_CHECKING:
    from search.config import TrialConfig


def bench_table(results: Sequence[Any]) -> str:
    """``cli.py bench``: ours against the reference loop, one row per model (``BenchResult``s
    of ``search.perf``)."""
    rows = [
        (
            _bench_label(r),
            r.device,
            r.batch_size,
            f"{r.ours_images_per_s:,.0f}",
            f"{r.reference_images_per_s:,.0f}",
            f"{r.ratio:.2f}x",
            f"{r.ours_peak_memory_mb:,.0f}",
            f"{r.train_flops_per_image / 1e9:.2f}",
            "-" if r.mfu is None else f"{100 * r.mfu:.1f}%",
        )
        for r in results
    ]
    return "\n".join(
        [
            table(
                [
                    "model",
                    "device",
                    "batch",
                    "ours img/s",
                    "reference img/s",
                    "ratio",
                    "peak MB",
                    "GFLOP/img",
                    "MFU",
                ],
                rows,
            ),
            "peak MB: CUDA memory allocated on the GPU, process RSS on the CPU; "
            "MFU: training FLOPs/image x images/s / the GPU's dense bf16 peak",
        ]
    )


def _bench_label(r: Any) -> str:
    """The model, and the torch.compile mode of ours: ``se_resnet18 compiled reduce-overhead``."""
    return r.model if r.compile_mode is None else f"{r.model} compiled {r.compile_mode}"


def bench_progress_line(model: str, figures: Any) -> str:
    """What ``cli.py bench`` says as soon as a model (or one process count) is measured: a
    ``BenchResult``, or the aggregate images/s per process count so far."""
    if isinstance(figures, Mapping):
        n, rate = list(figures.items())[-1]
        return f"measured {model}, {n} process{'es' if n > 1 else ''}: {rate:,.0f} img/s in all"
    return (
        f"measured {_bench_label(figures)}: ours {figures.ours_images_per_s:,.0f} img/s, reference "
        f"{figures.reference_images_per_s:,.0f} img/s ({figures.ratio:.2f}x)"
    )


def concurrency_table(
    rates: Mapping[str, Mapping[int, float]], batch_size: int, compile_mode: str | None = None
) -> str:
    """``cli.py bench --concurrency``: aggregate images/s per model and process count, with
    the speed-up over the first count; ``compile_mode``: how the models were compiled."""
    compiled = "" if compile_mode is None else f", compiled {compile_mode}"
    counts = list(next(iter(rates.values())))
    rows = [
        [name, *(f"{r[n]:,.0f} ({r[n] / r[counts[0]]:.2f}x)" for n in counts)]
        for name, r in rates.items()
    ]
    return "\n".join(
        [
            f"aggregate img/s of N worker processes on one device, batch "
            f"{batch_size}{compiled} (speed-up vs N={counts[0]}):",
            table(["model", *(f"N={n}" for n in counts)], rows),
        ]
    )


def fast_path_header(cfg: TrialConfig, seeds: Sequence[int]) -> str:
    return (
        f"{cfg.model.name} on {cfg.data.dataset}: {cfg.optim.epochs} epochs, batch "
        f"{cfg.optim.batch_size}, seeds {', '.join(map(str, seeds))}"
    )


def fast_path_run_line(r: Any) -> str:
    """One ``ArmRun`` of ``cli.py check-fast-path``."""
    if r.diverged:
        return f"seed {r.seed}  {r.arm:<4}  {r.diverged}"
    return (
        f"seed {r.seed}  {r.arm:<4}  loss {r.first_loss:.3f} -> {r.last_loss:.3f}  "
        f"val_acc {pct(r.val_acc)}  {r.seconds:.1f}s  {r.images_per_s:,.0f} img/s"
    )


def fast_path_verdict(outcome: Any) -> str:
    """The paired comparison of the two arms, then whether every run learned."""
    c, lines = outcome.comparison, []
    fast = c.variant  # the fast arm, compared with fp32
    if not outcome.fast_path_applied:
        lines.append(
            "note: bf16 and channels_last apply on CUDA only; on this device both arms ran in fp32"
        )
    if c.n:
        p = "-" if c.t_p is None else f"{c.t_p:.3f}"
        lines.append(
            f"{fast} - fp32 validation accuracy: {100 * c.diff_mean:+.2f} pp "
            f"[95% CI {100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] over {c.n} seeds "
            f"(fp32 {pct(c.base_mean)}, {fast} {pct(c.variant_mean)}; paired t p={p}): "
            f"{c.verdict}"
        )
    failed = outcome.not_learning()
    if failed:
        runs = ", ".join(f"seed {r.seed} {r.arm}" for r in failed)
        lines.append(
            f"FAILED: did not learn (loss did not fall or accuracy not above chance "
            f"{pct(outcome.chance)}): {runs}"
        )
    else:
        lines.append(
            f"every run learned: training loss fell and validation accuracy beat "
            f"chance ({pct(outcome.chance)})"
        )
    return "\n".join(lines)
