"""PNG figures with matplotlib's non-interactive backend (works on headless machines)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sample_grid(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path,
                per_class: int = 8, max_classes: int = 10, seed: int = 0) -> Path:
    """A grid of training images, one row per class, each row titled with its class name,
    so a user can check orientation, colours and labels before spending GPU hours."""
    rng = np.random.default_rng(seed)
    shown = [c for c in range(len(classes)) if (labels == c).any()][:max_classes]
    fig, axes = plt.subplots(len(shown), per_class, figsize=(per_class * 1.1, len(shown) * 1.2),
                             squeeze=False)
    for row, cls in enumerate(shown):
        idx = np.flatnonzero(labels == cls)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(pick):
                ax.imshow(images[pick[col]].transpose(1, 2, 0), interpolation="nearest")
        axes[row][0].set_title(classes[cls], loc="left", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
