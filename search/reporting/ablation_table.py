"""The ablation table and its files: the terminal table, ``ablation.md`` (with each
variant's changes and most changed classes), ``ablation.csv`` (one row per run) and
``ablation.png``. ``write_files`` is what ``cli.py ablate`` passes to ``run_ablation`` as
its ``artifacts``, so the same files land on the ablation's MLflow run."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from search.ablation import (
    BASELINE,
    AblationOutcome,
    RunRecord,
    Variant,
    resolved_flat,
    same_run,
)
from search.config import TrialConfig
from search.reporting.figures import ablation_png
from search.reporting.text import table

HEADERS = [
    "variant",
    "n",
    "acc % (mean ± sd)",
    "diff pp",
    "95% CI pp",
    "t-test p",
    "Wilcoxon p",
    "Holm p",
    "verdict",
    "loss",
    "params",
    "train s",
]


def _pp(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.2f}"


def _p(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g}" if x >= 1e-3 else "<0.001")


def most_changed_classes(
    outcome: AblationOutcome, variant: str, k: int = 3
) -> list[tuple[str, float]]:
    """The ``k`` classes whose accuracy moved most (mean paired difference over seeds)."""
    base = {r.seed: np.array(r.per_class) for r in outcome.of(BASELINE)}
    diffs = [np.array(r.per_class) - base[r.seed] for r in outcome.of(variant) if r.seed in base]
    if not diffs:
        return []
    mean = np.mean(diffs, axis=0)
    order = np.argsort(-np.abs(mean))[:k]
    return [(outcome.classes[i], float(mean[i])) for i in order]


def changes(base: TrialConfig, variant: TrialConfig) -> str:
    """``key = baseline value -> variant value`` for each key the variant changes, with the
    values each config really trains with (a preset's toggles and the model's defaults
    spelled out): ``aug.flip = True -> False``, not the unset ``None -> False``."""
    b, v = resolved_flat(base), resolved_flat(variant)
    changed = [f"{k} = {b.get(k)!r} -> {v.get(k)!r}" for k in sorted(b | v) if b.get(k) != v.get(k)]
    if changed:
        return ", ".join(changed)
    already = ", ".join(f"{k} = {after!r}" for k, (_, after) in base.diff(variant).items())
    return "same config as the baseline" + (f" ({already} already)" if already else "")


def table_rows(outcome: AblationOutcome) -> list[list[str]]:
    """One row per variant (baseline first): the columns of the ablation table."""
    rows = []
    by_name = {c.variant: c for c in outcome.comparisons}
    for v in outcome.variants:
        recs = outcome.of(v.name)
        acc = np.array([r.accuracy for r in recs])
        spread = f" ± {100 * acc.std(ddof=1):.2f}" if len(acc) > 1 else " (1 seed)"
        common = [
            f"{100 * acc.mean():.2f}{spread}",
            f"{np.mean([r.loss for r in recs]):.4f}",
            f"{recs[0].n_params:,}",
            f"{np.mean([r.train_seconds for r in recs]):.1f}",
        ]
        if v.name == BASELINE:
            rows.append(
                [
                    v.name,
                    str(len(recs)),
                    *common[:1],
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "(reference)",
                    *common[1:],
                ]
            )
            continue
        c = by_name[v.name]
        ci = f"[{_pp(c.ci_low)}, {_pp(c.ci_high)}]"
        same = same_run(v.config, outcome.variants[0].config)  # e.g. "no dropout" at 0 dropout
        rows.append(
            [
                v.name,
                str(c.n),
                *common[:1],
                _pp(c.diff_mean),
                ci,
                _p(c.t_p),
                _p(c.wilcoxon_p),
                _p(c.holm_p),
                "(same config as baseline)" if same else c.verdict,
                *common[1:],
            ]
        )
    return rows


def markdown(outcome: AblationOutcome) -> str:
    split = "test" if outcome.split == "test" else "validation"
    lines = [
        f"# Ablation ({split} accuracy, paired seeds {', '.join(map(str, outcome.seeds))})",
        "",
        f"Baseline: {outcome.base_label}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(outcome)]
    lines += [
        "",
        "diff = variant - baseline, mean over paired seeds; 95% CI t-based; p-values "
        "two-sided (paired t-test, Wilcoxon signed-rank when n >= 6); Holm-corrected "
        'across variants; verdict at alpha = 0.05, and "too few seeds" (never a yes or no) '
        "with fewer than 3 seeds or a CI wider than the difference.",
        "",
        "## Variants",
        "",
    ]
    for v in outcome.variants[1:]:
        changed = changes(outcome.variants[0].config, v.config)
        moved = ", ".join(
            f"{name} {_pp(d)} pp" for name, d in most_changed_classes(outcome, v.name) if d != 0
        )
        lines.append(f"- **{v.name}**: {changed}. Most changed classes: {moved or '-'}.")
    return "\n".join(lines) + "\n"


def csv_text(outcome: AblationOutcome) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "variant",
            "seed",
            "accuracy",
            "loss",
            "top5",
            "n_params",
            "train_seconds",
            "mlflow_run_id",
            "reused",
        ]
    )
    for r in outcome.records:
        writer.writerow(
            [
                r.variant,
                r.seed,
                r.accuracy,
                r.loss,
                r.top5,
                r.n_params,
                r.train_seconds,
                r.run_id,
                r.reused,
            ]
        )
    return out.getvalue()


def write_files(outcome: AblationOutcome, folder: Path) -> list[Path]:
    """``ablation.md``, ``ablation.csv`` and ``ablation.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("ablation.md", markdown(outcome)), ("ablation.csv", csv_text(outcome))):
        (folder / name).write_text(text)
        paths.append(folder / name)
    paths.append(ablation_png(outcome, folder / "ablation.png"))
    return paths


def ablation_run_line(variant: Variant, seed: int, record: RunRecord, split: str) -> str:
    """One variant x seed run as it finishes (``cli.py ablate``)."""
    how = "reused" if record.reused else f"trained in {record.train_seconds:.1f}s"
    how += " from the final retrain" if record.from_final else ""
    return f"{variant.name} seed {seed}: {split} accuracy {100 * record.accuracy:.2f}% ({how})"


def ablation_summary(outcome: AblationOutcome) -> str:
    """Where the baseline came from, how many runs were trained, and the table."""
    from_final = sum(r.from_final for r in outcome.records)
    return "\n".join(
        [
            f"\nbaseline: {outcome.base_label}; {outcome.trained} run(s) trained, "
            f"{len(outcome.records) - outcome.trained} reused"
            + (f" ({from_final} from the final retrain)" if from_final else ""),
            table(HEADERS, table_rows(outcome), align="lrrrrrrrlrrr"),
        ]
    )
