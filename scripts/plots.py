"""Plots every stage draws the same way (matplotlib with a file backend: works without a display)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import sys

import matplotlib
import matplotlib.pyplot as plt

if "ipykernel" not in sys.modules:  # programs write PNG files, with or without a display; notebooks keep inline plots
    matplotlib.use("Agg")


def plot_curves(history: list[dict], path: Path, panels: Sequence[Sequence[str]], title: str = "",
                x: str = "epoch") -> None:
    """One panel per group of history keys, plotted against `x` (keys missing from a row are skipped)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            points = [(row[x], row[key]) for row in history if key in row]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(xs) < 60 else None, label=key)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> None:
    """Confusion matrix with counts in the cells; rows are true classes, columns predictions."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2.5, 1.1 * n + 2))
    image = ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            color = "white" if matrix[i][j] > top / 2 else "black"
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color=color)
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
