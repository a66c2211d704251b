"""Matplotlib figures. Each function returns the Figure and, given ``path``, saves it there.

Figures are built with the object-oriented API on a fresh
:class:`matplotlib.figure.Figure` (no pyplot state), so they work with any
backend, including Agg on machines without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from inmaterio.fileio import atomic_path

if TYPE_CHECKING:
    from inmaterio.smg.iv import IVCurves

__all__ = ["plot_iv_curves", "plot_learning_curve", "plot_predicted_vs_measured", "save_figure"]


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` atomically to ``path`` (format from the suffix) if a path is given; return it."""
    if path is not None:
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    return fig


def plot_iv_curves(
    curves: Mapping[str, IVCurves], electrode_names: Sequence[str], path: str | Path | None = None
) -> Figure:
    """One subplot per electrode: readout current (nA) vs the swept electrode's voltage (V).

    ``curves`` maps a source name (e.g. ``"virtual device"``, ``"surrogate"``)
    to its :class:`~inmaterio.smg.iv.IVCurves`; sources with standard errors
    get a +-1 standard-error band.
    """
    n = len(electrode_names)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for k, name in enumerate(electrode_names):
        ax = axes[k]
        for label, c in curves.items():
            (line,) = ax.plot(c.sweep_v[k], c.current_na[k], label=label)
            if c.stderr_na is not None and np.any(c.stderr_na[k] > 0):
                ax.fill_between(
                    c.sweep_v[k],
                    c.current_na[k] - c.stderr_na[k],
                    c.current_na[k] + c.stderr_na[k],
                    color=line.get_color(),
                    alpha=0.25,
                )
        ax.set_title(f"sweep {name}", fontsize=9)
        ax.set_xlabel(f"V({name}) / V")
        ax.set_ylabel("I / nA")
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_learning_curve(history: Sequence[Mapping[str, Any]], path: str | Path | None = None) -> Figure:
    """Training and validation RMSE (nA, log scale) per epoch, from a training history."""
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_rmse_na"] for h in history], label="train")
    ax.plot(epochs, [h["val_rmse_na"] for h in history], label="validation")
    if history:
        best = min(history, key=lambda h: h["val_rmse_na"])
        ax.axvline(best["epoch"], color="grey", linestyle=":", label=f"best (epoch {best['epoch']})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE / nA")
    ax.legend()
    return save_figure(fig, path)


def plot_predicted_vs_measured(
    predicted_na: np.ndarray, measured_na: np.ndarray, path: str | Path | None = None
) -> Figure:
    """Scatter of predicted vs measured current (nA) with the identity line."""
    predicted = np.asarray(predicted_na, dtype=np.float64)
    measured = np.asarray(measured_na, dtype=np.float64)
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(measured, predicted, s=3, alpha=0.4)
    if len(measured):
        low = float(min(measured.min(), predicted.min()))
        high = float(max(measured.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="identity")
        ax.legend()
    ax.set_xlabel("measured I / nA")
    ax.set_ylabel("predicted I / nA")
    ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)
