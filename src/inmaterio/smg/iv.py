"""I-V curves: sweep one activation electrode at a time, the others held fixed.

For electrode ``k`` the sweep is ``n_points`` voltages evenly spaced over
``[low_k, high_k]`` V, the other electrodes at their base voltage (default
0 V, clipped into each range). All ``n_electrodes * n_points`` operating
points go to the device or surrogate in ONE batched call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inmaterio.smg.dataset import Dataset

__all__ = ["IVCurves", "iv_curves", "iv_plan", "iv_dataset"]


@dataclass
class IVCurves:
    """One sweep per electrode.

    Attributes
    ----------
    sweep_v : (n_electrodes, n_points) voltage of the swept electrode, V.
    current_na : (n_electrodes, n_points) readout current, nA.
    stderr_na : (n_electrodes, n_points) its standard error, nA, or None.
    base_v : (n_electrodes,) voltages of the electrodes not swept, V.
    """

    sweep_v: np.ndarray
    current_na: np.ndarray
    stderr_na: np.ndarray | None
    base_v: np.ndarray


def iv_plan(ranges: np.ndarray, n_points: int, base_voltages: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The operating points of all sweeps ``(n_electrodes * n_points, n_electrodes)`` V and the base voltages ``(n,)`` V.

    Rows ``k * n_points ... (k + 1) * n_points - 1`` sweep electrode ``k``.
    """
    ranges = np.asarray(ranges, dtype=np.float64)
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ValueError(f"ranges must have shape (n_electrodes, 2), got {ranges.shape}")
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    n = len(ranges)
    base = np.zeros(n) if base_voltages is None else np.asarray(base_voltages, dtype=np.float64)
    if base.shape != (n,):
        raise ValueError(f"base_voltages must have shape ({n},), got {base.shape}")
    base = np.clip(base, ranges[:, 0], ranges[:, 1])
    sweeps = np.linspace(ranges[:, 0], ranges[:, 1], n_points).T  # (n, n_points)
    return _sweep_plan(sweeps, base), base


def _sweep_plan(sweeps: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Rows ``k * n_points ...``: electrode ``k`` at ``sweeps[k]`` ``(n, n_points)`` V, the others at ``base`` ``(n,)`` V."""
    n, n_points = sweeps.shape
    plan = np.repeat(base[None, :], n * n_points, axis=0)
    for k in range(n):
        plan[k * n_points : (k + 1) * n_points, k] = sweeps[k]
    return plan


def iv_dataset(curves: IVCurves) -> Dataset:
    """The sweeps as a :class:`~inmaterio.smg.dataset.Dataset` of ``n_electrodes * n_points`` points (stderr 0 if none)."""
    current = curves.current_na.reshape(-1)
    stderr = np.zeros_like(current) if curves.stderr_na is None else curves.stderr_na.reshape(-1)
    return Dataset(_sweep_plan(curves.sweep_v, curves.base_v), current, stderr)


def iv_curves(
    measure: Callable[[np.ndarray], Any],
    ranges: np.ndarray,
    n_points: int,
    base_voltages: np.ndarray | None = None,
) -> IVCurves:
    """Sweep every electrode over its range (see the module docstring).

    Parameters
    ----------
    measure : ``(batch, n) V -> (batch,) nA``, e.g. ``device.measure``,
        ``device.measure_with_error`` (then the standard errors are kept) or
        ``model.predict``.
    ranges : ``(n_electrodes, 2)`` [low, high] V.
    n_points : points per sweep (>= 2).
    base_voltages : ``(n_electrodes,)`` V held by the electrodes not swept; default 0 V (clipped into range).
    """
    plan, base = iv_plan(ranges, n_points, base_voltages)
    n = len(base)
    result = measure(plan)
    stderr = None
    if hasattr(result, "current_na"):  # a Measurement
        stderr = np.asarray(result.stderr_na, dtype=np.float64).reshape(n, n_points)
        result = result.current_na
    current = np.asarray(result, dtype=np.float64).reshape(n, n_points)
    sweep = plan.reshape(n, n_points, n)[np.arange(n), :, np.arange(n)]
    return IVCurves(sweep_v=sweep, current_na=current, stderr_na=stderr, base_v=base)
