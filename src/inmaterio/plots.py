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

__all__ = [
    "plot_adaptive_rounds",
    "plot_capacity",
    "plot_class_outputs",
    "plot_iv_curves",
    "plot_learning_curve",
    "plot_loss_curves",
    "plot_output_maps",
    "plot_predicted_vs_measured",
    "save_figure",
]


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` atomically to ``path`` (format from the suffix) if a path is given; return it."""
    if path is not None:
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    return fig


def plot_iv_curves(curves: Mapping[str, IVCurves], electrode_names: Sequence[str], path: str | Path | None = None) -> Figure:
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


def plot_adaptive_rounds(rounds: Sequence[Mapping[str, Any]], path: str | Path | None = None) -> Figure:
    """Adaptive sampling per round (:mod:`inmaterio.smg.adaptive`): where the picks fell and what they found.

    Left: the round's ensemble's RMSE (nA) on the points it picked, measured after the pick, beside its
    validation RMSE. Right: the mean spread (nA) of the candidate pool and of the picks, and the
    fraction of picks on slices (right axis).
    """
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    r = [int(row["round"]) for row in rounds]
    left.plot(r, [row["selected_rmse_na"] for row in rounds], "o-", label="on its picks")
    left.plot(r, [row["validation_rmse_na"] for row in rounds], "s--", label="on its validation split")
    left.set(xlabel="round", ylabel="ensemble RMSE / nA", title="error where the ensemble disagreed")
    left.legend()
    right.plot(r, [row["selected_mean_spread_na"] for row in rounds], "o-", label="picks")
    right.plot(r, [row["pool_mean_spread_na"] for row in rounds], "s--", label="candidate pool")
    right.set(xlabel="round", ylabel="mean ensemble spread / nA", title="what was picked")
    share = right.twinx()
    share.bar(r, [row["selected_on_slices"] for row in rounds], alpha=0.2, color="grey", label="picks on slices")
    share.set(ylabel="fraction of picks on slices", ylim=(0, 1))
    right.set_zorder(share.get_zorder() + 1)
    right.patch.set_visible(False)
    lines, labels = right.get_legend_handles_labels()
    bars, bar_labels = share.get_legend_handles_labels()
    right.legend(lines + bars, labels + bar_labels, fontsize=8)
    for ax in (left, right):
        ax.set_xticks(r)
    return save_figure(fig, path)


def plot_predicted_vs_measured(predicted_na: np.ndarray, measured_na: np.ndarray, path: str | Path | None = None) -> Figure:
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


def plot_loss_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path | None = None, ylabel: str = "loss"
) -> Figure:
    """Loss per training step (epoch or generation), one line per named run (``step``, ``loss`` rows)."""
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    for name, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name)
    ax.set_xlabel("epoch / generation")
    ax.set_ylabel(ylabel)
    if len(curves) > 1:
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_class_outputs(
    panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: str | Path | None = None
) -> Figure:
    """Output current per class: one panel per task, one row of points per back end.

    ``panels[title][backend] = (current_na (n,), target (n,) in {0, 1})``; each
    back end's currents are drawn at its own height, coloured by class, so the
    separation of the classes (and the agreement of surrogate and device) can be seen.
    """
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(
        figsize=(4.2 * cols, 0.9 + 0.55 * rows * max(len(p) for p in panels.values()) + 0.6 * rows), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (title, backends) in zip(axes, panels.items()):
        for level, (current, target) in enumerate(backends.values()):
            current, target = np.asarray(current, dtype=float), np.asarray(target)
            jitter = level + 0.08 * np.sin(np.arange(len(current)) * 2.39996)
            for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
                sel = target == cls
                ax.scatter(current[sel], jitter[sel], s=14, color=colour, alpha=0.7, label=f"class {cls}" if level == 0 else None)
        ax.set_yticks(range(len(backends)), list(backends))
        ax.set_ylim(-0.6, len(backends) - 0.4)
        ax.set_xlabel("output current / nA")
        ax.set_title(title)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small", loc="best")
    return save_figure(fig, path)


def plot_output_maps(
    maps: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    points: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    path: str | Path | None = None,
    xlabel: str = "input 1",
    ylabel: str = "input 2",
) -> Figure:
    """Output current over the plane of the two inputs (the I-V map of a solution).

    ``maps[title] = (x (nx,), y (ny,), current_na (ny, nx))``; optional
    ``points[title] = (xy (n, 2), target (n,))`` are overlaid, coloured by class.
    """
    n = max(len(maps), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.0 * cols, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (title, (gx, gy, current)) in zip(axes, maps.items()):
        mesh = ax.pcolormesh(gx, gy, current, shading="auto", cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="I / nA")
        if points and title in points:
            xy, target = points[title]
            xy, target = np.asarray(xy), np.asarray(target)
            for cls, colour in ((0, "white"), (1, "black")):
                sel = target == cls
                ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=colour, edgecolors="grey", linewidths=0.3)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[len(maps) :]:
        ax.set_visible(False)
    return save_figure(fig, path)


def plot_capacity(n_points: Sequence[int], fractions: Mapping[str, Sequence[float]], path: str | Path | None = None) -> Figure:
    """Fraction of the 2^N labellings found vs N, one line per back end or model."""
    fig = Figure(figsize=(5, 3.5) if len(fractions) <= 3 else (7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, values in fractions.items():
        ax.plot(list(n_points), list(values), marker="o", label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("number of points N")
    ax.set_ylabel("fraction of labellings found")
    ax.legend(fontsize="small" if len(fractions) > 3 else None)
    return save_figure(fig, path)
