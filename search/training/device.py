"""The training device: choosing it, what runs fast on it, and measuring it."""

from __future__ import annotations

import os
import resource

import torch

from search.config import TrialConfig
from search.errors import ConfigError

# bf16 autocast and channels_last are applied on CUDA, where tensor cores pay for them. A
# CPU without bf16 units runs bf16 slower than fp32, and it changes the numbers, so the CPU
# keeps fp32 and the default layout. (Tests widen this set to run the CUDA path on a CPU.)
FAST_PATH_DEVICES = frozenset({"cuda"})


def threads_per_process(processes: int) -> int:
    """CPU threads each of ``processes`` processes may use: torch otherwise gives every
    process one thread per core, and N processes on one machine then fight over the cores
    (2 resnet20 workers on 2 cores trained at 0.46x the speed of one, and at 1.01x-1.20x
    with the cores split)."""
    try:  # the cores this process may run on (a SLURM or container allocation), not the node's
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // processes)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA GPU, else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available on this machine", key="runtime.device", value=name)
    return torch.device(name)


def configure_cuda(cfg: TrialConfig) -> None:
    """cuDNN autotuning for speed, or, with ``runtime.deterministic``, deterministic kernels
    only: a GPU run then gives the same numbers twice, and a resumed run equals an
    uninterrupted one (slower; some operations have no deterministic kernel and raise)."""
    deterministic = cfg.runtime.deterministic
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; read when it starts up
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic)


def autocast(cfg: TrialConfig, device: torch.device):
    enabled = cfg.runtime.bf16 and device.type in FAST_PATH_DEVICES
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
