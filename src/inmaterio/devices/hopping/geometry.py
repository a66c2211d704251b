"""Geometry of the virtual DNPU: a disc with electrode arcs on its rim, and its dopants.

Coordinates are in nanometres with the disc centred at the origin. Electrode
``k`` of ``n`` is the rim arc centred at angle ``2 pi k / n`` (radians,
counter-clockwise from +x) spanning ``electrode_width_nm / radius_nm``
radians.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inmaterio.devices.hopping.config import HoppingConfig
from inmaterio.errors import SimulationError

__all__ = ["Dopants", "electrode_centre_angles", "place_dopants", "distance_to_arcs", "angle_on_electrode"]


@dataclass(frozen=True)
class Dopants:
    """Positions of the dopants, nm.

    Attributes
    ----------
    acceptors : (n_acceptors, 2) hopping sites.
    donors : (n_donors, 2) fixed positive charges.
    """

    acceptors: np.ndarray
    donors: np.ndarray


def electrode_centre_angles(n_electrodes: int) -> np.ndarray:
    """Angles (rad) of the electrode centres, ``(n_electrodes,)``."""
    return 2 * np.pi * np.arange(n_electrodes) / n_electrodes


def angle_on_electrode(theta: np.ndarray, config: HoppingConfig) -> np.ndarray:
    """Index of the electrode covering each rim angle ``theta`` (rad), or -1 for bare rim."""
    centres = electrode_centre_angles(config.n_electrodes)
    half = 0.5 * config.electrode_width_nm / config.radius_nm
    diff = np.angle(np.exp(1j * (np.asarray(theta)[..., None] - centres)))  # wrapped to (-pi, pi]
    on = np.abs(diff) <= half + 1e-12
    return np.where(on.any(-1), on.argmax(-1), -1)


def place_dopants(config: HoppingConfig) -> Dopants:
    """Place acceptors and donors uniformly in the disc, from ``config.seed``.

    Dopants closer than ``min_site_distance_nm`` to any dopant already placed
    are redrawn (random sequential addition). The same seed always gives the
    same positions: the seed is the chip.
    """
    rng = np.random.default_rng([config.seed, 0x0D0FA17])
    total = config.n_acceptors + config.n_donors
    points = np.empty((total, 2))
    min_d2 = config.min_site_distance_nm**2
    placed = 0
    attempts = 0
    while placed < total:
        attempts += 1
        if attempts > 1000 * total:
            raise SimulationError(
                f"cannot place {total} dopants at least {config.min_site_distance_nm} nm apart in a disc of "
                f"radius {config.radius_nm} nm; lower min_site_distance_nm or the dopant count"
            )
        r = config.radius_nm * np.sqrt(rng.random())
        t = 2 * np.pi * rng.random()
        p = np.array([r * np.cos(t), r * np.sin(t)])
        if placed and np.min(np.sum((points[:placed] - p) ** 2, axis=1)) < min_d2:
            continue
        points[placed] = p
        placed += 1
    return Dopants(acceptors=points[: config.n_acceptors].copy(), donors=points[config.n_acceptors :].copy())


def distance_to_arcs(points: np.ndarray, config: HoppingConfig) -> np.ndarray:
    """Shortest distance (nm) from each point to each electrode arc, ``(n_points, n_electrodes)``.

    For a point inside the disc whose polar angle lies within an arc, the
    nearest arc point is radially outward (distance ``R - |p|``); otherwise it
    is the nearer end of the arc.
    """
    R = config.radius_nm
    centres = electrode_centre_angles(config.n_electrodes)
    half = 0.5 * config.electrode_width_nm / R
    rho = np.hypot(points[:, 0], points[:, 1])[:, None]
    theta = np.arctan2(points[:, 1], points[:, 0])[:, None]
    diff = np.angle(np.exp(1j * (theta - centres[None, :])))
    clamped = np.clip(diff, -half, half)
    # nearest point on the arc is at angle centre + clamped
    ang = centres[None, :] + clamped
    dx = points[:, 0:1] - R * np.cos(ang)
    dy = points[:, 1:2] - R * np.sin(ang)
    d = np.hypot(dx, dy)
    inside = np.abs(diff) <= half
    return np.where(inside, np.abs(R - rho), d)
