"""A figure of energy per inference against accuracy across cost reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from inmaterio.costs.report import CostReport
from inmaterio.errors import ConfigError
from inmaterio.plots import save_figure

__all__ = ["energy_accuracy_figure"]


def energy_accuracy_figure(reports: Sequence[CostReport], labels: Sequence[str], path: str | Path | None = None) -> Figure:
    """Energy per inference (log scale, J) against accuracy (%) of every report that has an accuracy, with the digital
    baselines as hollow markers joined to their model; saved to ``path`` (atomically) when given.

    Args:
        reports: the reports.
        labels: one label per report.
        path: an image file to write, or None.

    Raises:
        ConfigError: ``labels`` not one per report, or no report with an accuracy.
    """
    if len(labels) != len(reports):
        raise ConfigError(f"give one label per report: {len(reports)} reports, {len(labels)} labels")
    points = [(r, lab) for r, lab in zip(reports, labels) if r.accuracy_percent is not None]
    if not points:
        raise ConfigError("none of the reports has an accuracy to plot against (their runs record none)")
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for i, (report, label) in enumerate(points):
        color = f"C{i % 10}"
        acc = report.accuracy_percent
        ax.scatter([report.total.energy_j], [acc], color=color, label=label, zorder=3)
        if report.baseline is not None:
            ax.scatter([report.baseline.energy_j], [acc], facecolors="none", edgecolors=color, zorder=3)
            ax.plot([report.total.energy_j, report.baseline.energy_j], [acc, acc], color=color, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (J); hollow: the same network on the digital int8 baseline")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)
