"""PNG plots for the eval report: confusion matrix, ROC/PR curves, training curves.

matplotlib is imported inside each function with the Agg backend, so importing this module
costs nothing and never needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    """Confusion matrix heat map, counts in each cell; rows = actual, columns = predicted."""
    plt = _pyplot()
    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color)
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_png(rows: list[dict[str, Any]], x: str, y: str, title: str, path: Path) -> Path:
    """One line per class from `curve_points` rows (e.g. x=fpr, y=tpr)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    frame = pd.DataFrame(rows, columns=["class", x, y])
    for name, part in frame.groupby("class", sort=False):
        ax.plot(part[x], part[y], label=str(name))
    if x == "fpr":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    if not frame.empty:
        ax.legend(loc="lower right" if x == "fpr" else "lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_curve(path: Path) -> pd.DataFrame | None:
    """The train step's curve.csv, or None if it is missing or empty (a 0-step run)."""
    try:
        curve = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return None if curve.empty else curve


def training_curves_png(curve: pd.DataFrame, path: Path) -> Path | None:
    """Every numeric column of curve.csv against `step` (or the row index); None if empty."""
    numeric = curve.select_dtypes("number")
    xcol = "step" if "step" in numeric else None
    series = [c for c in numeric.columns if c not in ("step", "epoch")]
    if numeric.empty or not series:
        return None
    plt = _pyplot()
    losses = [c for c in series if "loss" in c]
    others = [c for c in series if c not in losses and "lr" not in c and "learning_rate" not in c]
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, cols in zip(axes[0], panels, strict=False):
        for col in cols:
            part = curve[[xcol, col] if xcol else [col]].dropna()
            ax.plot(part[xcol] if xcol else part.index, part[col], marker=".", label=col)
        ax.set_xlabel(xcol or "row")
        ax.legend()
    fig.suptitle("training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
