"""The option layer of ``cli.py``: its parameter types and every option of its commands, so
that ``cli.py`` holds only the commands (parse, one call, print); the group class and the
process-wide settings are in ``cli_setup``.

As in mlflow (``mlflow/utils/cli_args.py``), each option is defined once here, as a
``functools.partial`` of ``click.option``: a command takes ``@STUDY()`` as defined, and a
variant that one command needs is a ``partial`` of the shared one, named after the command
(``RETRAIN_SEEDS``). Every comma-separated option is a ``CommaList``.

Light on purpose: only click and ``search.errors`` are imported at module level (the study
loader imports ``search.study`` when it runs), so
that ``--help``, ``keys``, ``studies`` and a mistyped ``--study`` start fast and import no
torch, scikit-learn or MLflow."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from search.errors import ConfigError

if TYPE_CHECKING:
    from search.study import StudySpec


class CommaList(click.ParamType):
    """A comma-separated list such as ``0,1,2`` (blanks dropped). A value that does not fit is a
    ``ConfigError`` naming the option: one line and exit code 2, like every user error."""

    def __init__(
        self,
        what: str,
        example: str,
        item: Callable[[str], Any] = str,
        *,
        rule: str | None = None,
        minimum: int | None = None,
        distinct: bool = False,
    ):
        self.name = "list"
        self.what, self.example, self.item = what, example, item
        self.rule, self.minimum, self.distinct = rule, minimum, distinct

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        # the example as typed (--variants no_se,basic_aug): names are case-sensitive
        return self.example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list:
        if isinstance(value, list):
            return value
        text, key = str(value), param.opts[0] if param is not None else None
        expected = f"comma-separated {self.what}, e.g. {self.example}"
        try:
            items = [self.item(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"expected {expected}", key=key, value=text) from None
        if (
            not items
            or (self.minimum is not None and min(items) < self.minimum)
            or (self.distinct and len(set(items)) != len(items))
        ):
            raise ConfigError(f"expected {self.rule or expected}", key=key, value=text)
        return items


def _load_study(ctx: click.Context, param: click.Parameter, name: str) -> StudySpec:
    from search.study import load_study  # not at the top: it pulls in the model zoo

    return load_study(name)


# Shared by several commands --------------------------------------------------------------
STUDY = partial(
    click.option,
    "--study",
    "spec",
    required=True,
    callback=_load_study,
    help="study name (a file in studies/) or path to a study TOML file",
)
STORAGE = partial(
    click.option,
    "--storage",
    help="Optuna storage URL (sqlite:///..., "
    "postgresql://user:pass@host/db); default: a journal file mlruns/<study>.journal",
)
CHECKPOINT_DIR = partial(
    click.option,
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    help="folder for the training checkpoints (a subfolder per study); default: "
    "mlruns/checkpoints/. Workers on several machines (a PostgreSQL study) must all see "
    "the same folder, so that a lost trial continues elsewhere",
)
DATA_DIR = partial(
    click.option,
    "--data-dir",
    type=click.Path(file_okay=False),
    help="folder holding cifar-10-batches-py/ or cifar-100-python/ (default "
    "$CIFAR_DATA_DIR or ./data)",
)
DATASET = partial(
    click.option,
    "--dataset",
    default="cifar10",
    show_default=True,
    help="cifar10, cifar100, digits or synthetic",
)
MODEL = partial(click.option, "--model", help="model name (see `cli.py models`)")
DEVICE = partial(click.option, "--device", help="auto, cpu, cuda, cuda:N (runtime.device)")
SET = partial(
    click.option,
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config key, e.g. --set optim.lr=0.05 (repeatable; keys: `cli.py keys`)",
)
SEEDS_HELP = "comma-separated distinct seeds, e.g. 0,1,2 (3 means seed 3, not 3 seeds)"
SEEDS = partial(
    click.option,
    "--seeds",
    help=SEEDS_HELP,
    type=CommaList(
        "integers", "0,1,2", int, rule="distinct non-negative integers", minimum=0, distinct=True
    ),
)
OUT = partial(click.option, "--out", type=click.Path(file_okay=False))
# bench and check-fast-path measure on the best device there is unless told otherwise
DEVICE_AUTO = partial(DEVICE, default="auto", show_default=True)

# data ------------------------------------------------------------------------------------
VAL_FRACTION = partial(
    click.option,
    "--val-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="share of the training split held out for validation",
)
GRID = partial(
    click.option,
    "--grid",
    type=click.Path(dir_okay=False),
    help="write a PNG of images per class",
)

# train -----------------------------------------------------------------------------------
TRAIN_MODEL = partial(MODEL, help="model name (see `cli.py models`); same as --set model.name=...")
TRAIN_DATASET = partial(
    DATASET,
    default=None,
    show_default=False,
    help="cifar10, cifar100, digits or synthetic; same as --set data.dataset=...",
)
CONFIG = partial(
    click.option,
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="TOML config (e.g. from `cli.py best`); --model/--dataset/--set override it",
)
SEED = partial(click.option, "--seed", type=int, help="training seed (runtime.seed)")
TEST = partial(
    click.option,
    "--test",
    is_flag=True,
    help="train on train+validation and evaluate once on the test split",
)
TRAIN_OUT = partial(OUT, help="write metrics.json, config.toml and model.pt (state_dict) here")

# search ----------------------------------------------------------------------------------
N_TRIALS = partial(
    click.option,
    "--n-trials",
    type=click.IntRange(min=1),
    help="target number of COMPLETE+PRUNED trials (default: the study file's)",
)
TIMEOUT = partial(
    click.option,
    "--timeout",
    type=click.FloatRange(min=0),
    help="stop starting trials after this many seconds",
)
SEARCH_SET = partial(SET, help="fix a config key that is not searched, e.g. --set optim.epochs=10")
NO_RETRAIN = partial(
    click.option, "--no-retrain", is_flag=True, help="skip the final retrain of the best trial"
)
WORKERS = partial(
    click.option,
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="worker processes on this machine sharing the study",
)
GPUS = partial(
    click.option,
    "--gpus",
    type=CommaList("GPU ids", "0,1"),
    help="comma-separated GPU ids: --trials-per-gpu workers pinned to each "
    "through CUDA_VISIBLE_DEVICES (replaces --workers)",
)
TRIALS_PER_GPU = partial(
    click.option,
    "--trials-per-gpu",
    type=click.IntRange(min=1),
    default=None,
    help="concurrent trials on each GPU [default: 4, which on an H200 trained 1.8-3.5x "
    "the images/s of one; 1 where there is no GPU; fewer for big models on a small GPU]",
)
MAX_FAILURES = partial(
    click.option,
    "--max-failures",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="stop the study after this many failed trials in a row",
)
HEARTBEAT = partial(
    click.option,
    "--heartbeat",
    type=click.FloatRange(min=1),
    default=20,
    show_default=True,
    help="seconds between a running trial's heartbeats; a trial silent for 3 of "
    "them (or whose process is gone, on this host) is marked FAIL and retried, continuing "
    "from its last checkpoint",
)
SYSTEM_METRICS = partial(
    click.option,
    "--system-metrics/--no-system-metrics",
    help="off by default: sample each trial's CPU use, memory, disk and network into its MLflow "
    "run every few seconds (system/* metrics); GPU use, memory and power need nvidia-ml-py",
)

# retrain ---------------------------------------------------------------------------------
TRIAL = partial(
    click.option,
    "--trial",
    "trial_number",
    type=int,
    help="trial number (default: the best trial; with several objectives the Pareto "
    "front's best on the first one)",
)
ABLATE_TRIAL = partial(
    TRIAL, help="baseline: this searched trial (from MLflow) instead of the best"
)
RETRAIN_SEEDS = partial(SEEDS, help=f"{SEEDS_HELP}; default: the study file's [retrain] seeds")

# best ------------------------------------------------------------------------------------
FORMAT = partial(
    click.option,
    "--format",
    "fmt",
    type=click.Choice(["toml", "json"]),
    default="toml",
    show_default=True,
)
OUTPUT = partial(
    click.option,
    "--output",
    type=click.Path(dir_okay=False),
    help="write to this file instead of stdout",
)
REGISTER = partial(
    click.option,
    "--register",
    metavar="NAME",
    help="instead of printing the configuration, put the trial's retrained model (the "
    "first seed's MLflow model of its final retrain) into the MLflow Model Registry as a "
    "new version of NAME",
)

# dashboard -------------------------------------------------------------------------------
HOST = partial(
    click.option,
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="interface to listen on (loopback by default)",
)
PORT = partial(click.option, "--port", default=8080, show_default=True, type=int)

# ablate ----------------------------------------------------------------------------------
ABLATE_SEEDS = partial(SEEDS, default="0,1,2", show_default=True)
BASE = partial(
    click.option,
    "--base",
    default="auto",
    show_default=True,
    help="baseline: best (the study's best trial, from MLflow; with several objectives the "
    "Pareto front's best on the first one), fixed (the study file's fixed values), auto (best "
    "if searched, else fixed) or a config FILE",
)
VARIANTS = partial(
    click.option,
    "--variants",
    type=CommaList("variant names", "no_se,basic_aug"),
    help="comma-separated variant names (default: all)",
)
LEAVE_ONE_OUT = partial(
    click.option,
    "--leave-one-out",
    is_flag=True,
    help="instead of the file's [[ablation]] entries, switch off each enabled "
    "component of the baseline in turn",
)
ON = partial(
    click.option,
    "--on",
    "split",
    type=click.Choice(["test", "val"]),
    default="test",
    show_default=True,
    help="evaluate on the test split (train on train+val) or on validation (train on train)",
)
FORCE = partial(
    click.option, "--force", is_flag=True, help="retrain even runs already found in MLflow"
)
ABLATE_OUT = partial(OUT, help="also write ablation.md, ablation.csv and ablation.png here")

# report ----------------------------------------------------------------------------------
REPORT_OUT = partial(
    OUT, default="report", show_default=True, help="folder to write report.md and its PNGs into"
)

# bench -----------------------------------------------------------------------------------
BENCH_MODELS = partial(
    MODEL,
    "model_names",
    type=CommaList("model names", "resnet20,se_resnet18"),
    default="se_resnet18",
    show_default=True,
    help="model name, or several separated by commas",
)
BATCH_SIZE = partial(
    click.option, "--batch-size", default=512, show_default=True, type=click.IntRange(min=1)
)
STEPS = partial(
    click.option,
    "--steps",
    default=20,
    show_default=True,
    type=click.IntRange(min=2),
    help="steps per timed epoch: ours is timed over 2 epochs after an untimed "
    "one, the reference over this many batches after 3 warm-up batches",
)
WIDTH = partial(
    click.option, "--width", type=float, help="model.width (e.g. 0.25 for a quick CPU run)"
)
COMPILE = partial(click.option, "--compile", "use_compile", is_flag=True)


def _default_compile_mode() -> str:
    from search.config import RuntimeConfig  # only when asked: it pulls in the model zoo

    return RuntimeConfig().compile_mode


BENCH_COMPILE = partial(
    click.option,
    "--compile",
    "compile_mode",
    is_flag=False,
    flag_value="",  # --compile alone: runtime.compile_mode's default
    callback=lambda ctx, param, mode: _default_compile_mode() if mode == "" else mode,
    metavar="[MODE]",
    help="torch.compile our model, in MODE if one follows: reduce-overhead (the default: "
    "CUDA graphs), default, max-autotune or max-autotune-no-cudagraphs",
)
CONCURRENCY = partial(
    click.option,
    "--concurrency",
    type=CommaList("process counts", "1,2,4", int, rule="counts >= 1", minimum=1),
    help="instead: aggregate images/s of N worker processes training at once on "
    "the device, e.g. 1,2,4",
)

# check-fast-path -------------------------------------------------------------------------
CHECK_MODEL = partial(MODEL, default="se_resnet18", show_default=True)
CHECK_SEEDS = partial(SEEDS, default="0,1,2,3,4", show_default=True)
EPOCHS = partial(
    click.option, "--epochs", default=30, show_default=True, type=click.IntRange(min=2)
)
CHECK_COMPILE = partial(COMPILE, help="the fast arm also uses torch.compile")


def SEARCH_WORKER(command: Callable) -> Callable:  # noqa: N802 (a decorator, named like options)
    """The options that ``search`` and ``slurm`` pass on to every worker of a study."""
    shared = (N_TRIALS, DATA_DIR, DEVICE, STORAGE, SEARCH_SET, MAX_FAILURES, HEARTBEAT)
    for option in reversed((*shared, SYSTEM_METRICS, CHECKPOINT_DIR)):
        command = option()(command)
    return command
