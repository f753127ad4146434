"""A grid of misclassified test images as one PNG: each with its label, guess, confidence."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def misclassified_grid(worst: pd.DataFrame, root: Path, path: Path, cols: int = 5) -> Path:
    """Draw `worst` (columns image, label, predicted, confidence; image relative to `root`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = len(worst)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified\ntest images", ha="center", va="center")
    for ax, row in zip(axes.ravel(), worst.itertuples(), strict=False):
        with Image.open(root / row.image) as img:
            ax.imshow(img.convert("RGB"), interpolation="nearest")
        ax.set_title(f"{row.label} -> {row.predicted}\n({row.confidence:.2f})", fontsize=8,
                     color="firebrick")
    fig.suptitle("Misclassified test images: true -> predicted (confidence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
