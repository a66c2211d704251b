"""Electrostatic potential of the electrodes: Laplace's equation on the disc.

The disc is an insulator except where the electrode arcs touch its rim. The
potential of the electrodes solves

    laplace(phi) = 0            inside the disc,
    phi = V_k                   on electrode arc k (Dirichlet),
    d(phi)/dn = 0               on the bare rim (no field leaves the insulator).

The problem is linear, so it is solved once per electrode (``V_k = 1 V``, all
others 0 V) and any operating point is the superposition
``phi(r) = sum_k V_k phi_k(r)``. The sum of all basis functions is 1 (a
constant potential solves the problem), which the tests check.

Discretisation: finite differences on a polar grid (``n_r`` rings of spacing
``dr``, ``n_theta`` angles) with a single centre node, so that the circular
boundary is represented exactly; the bare rim uses a mirrored ghost ring.
The sparse system is factorised once (scipy ``splu``) and solved for all
electrodes. Values at the dopant sites are interpolated bilinearly in
``(r, theta)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from inmaterio.devices.hopping.config import HoppingConfig
from inmaterio.devices.hopping.geometry import angle_on_electrode
from inmaterio.errors import ConfigError

__all__ = ["ElectrodePotentials", "solve_electrode_potentials"]


@dataclass(frozen=True)
class ElectrodePotentials:
    """Per-electrode potential basis on a polar grid.

    Attributes
    ----------
    radius_nm : disc radius.
    grid : (n_electrodes, n_r + 1, n_theta) potential in V per volt on the
        electrode; ring 0 is the centre (all angles equal), ring n_r the rim.
    """

    radius_nm: float
    grid: np.ndarray

    @property
    def n_r(self) -> int:
        return self.grid.shape[1] - 1

    @property
    def n_theta(self) -> int:
        return self.grid.shape[2]

    def at(self, points: np.ndarray) -> np.ndarray:
        """Potential basis at ``points`` (n, 2) nm inside the disc: ``(n_electrodes, n)`` V/V."""
        rho = np.hypot(points[:, 0], points[:, 1]) / self.radius_nm * self.n_r
        theta = np.mod(np.arctan2(points[:, 1], points[:, 0]), 2 * np.pi) / (2 * np.pi) * self.n_theta
        i0 = np.clip(np.floor(rho).astype(int), 0, self.n_r - 1)
        fr = np.clip(rho - i0, 0.0, 1.0)
        j0 = np.floor(theta).astype(int) % self.n_theta
        j1 = (j0 + 1) % self.n_theta
        ft = theta - np.floor(theta)
        g = self.grid
        inner = (1 - ft) * g[:, i0, j0] + ft * g[:, i0, j1]
        outer = (1 - ft) * g[:, i0 + 1, j0] + ft * g[:, i0 + 1, j1]
        return (1 - fr) * inner + fr * outer


def solve_electrode_potentials(config: HoppingConfig) -> ElectrodePotentials:
    """Solve Laplace's equation once per electrode (see the module docstring)."""
    R = config.radius_nm
    h = config.grid_spacing_nm
    n_r = max(8, int(round(R / h)))
    n_t = max(64, 4 * int(round(2 * np.pi * R / h / 4)))
    dr = R / n_r
    dt = 2 * np.pi / n_t
    theta = np.arange(n_t) * dt
    rim_owner = angle_on_electrode(theta, config)  # electrode index per rim node, -1 = bare
    n_el = config.n_electrodes
    for k in range(n_el):
        if not np.any(rim_owner == k):
            raise ConfigError(
                f"electrode {k} is narrower than the angular grid step; lower grid_spacing_nm "
                f"(now {h} nm) or widen electrode_width_nm (now {config.electrode_width_nm} nm)"
            )

    # unknown numbering: centre = 0, ring i (1..n_r), angle j -> 1 + (i-1)*n_t + j
    def idx(i: int, j: np.ndarray) -> np.ndarray:
        return 1 + (i - 1) * n_t + (j % n_t)

    n_unknown = 1 + n_r * n_t
    rows, cols, vals = [], [], []
    rhs = np.zeros((n_unknown, n_el))
    j = np.arange(n_t)

    def add(r, c, v):
        rows.append(np.broadcast_to(r, np.shape(c)).ravel())
        cols.append(np.ravel(c))
        vals.append(np.broadcast_to(v, np.shape(c)).ravel())

    # centre: mean of ring 1 minus centre = 0
    add(np.array([0]), np.array([0]), np.array([-1.0]))
    add(np.zeros(n_t, int), idx(1, j), np.full(n_t, 1.0 / n_t))
    for i in range(1, n_r + 1):
        r = i * dr
        me = idx(i, j)
        if i < n_r:
            w_out = (r + dr / 2) / (r * dr * dr)
            w_in = (r - dr / 2) / (r * dr * dr)
            w_t = 1.0 / (r * r * dt * dt)
            inner = idx(i - 1, j) if i > 1 else np.zeros(n_t, int)
            add(me, me, -(w_out + w_in + 2 * w_t))
            add(me, idx(i + 1, j), w_out)
            add(me, inner, w_in)
            add(me, idx(i, j + 1), w_t)
            add(me, idx(i, j - 1), w_t)
        else:
            dirichlet = rim_owner >= 0
            d_nodes = me[dirichlet]
            add(d_nodes, d_nodes, 1.0)
            rhs[d_nodes, rim_owner[dirichlet]] = 1.0
            bare = ~dirichlet
            b_nodes = me[bare]
            jb = j[bare]
            # ghost ring mirrored: radial term 2 (phi_{n-1} - phi_n) / dr^2
            w_r = 2.0 / (dr * dr)
            w_t = 1.0 / (r * r * dt * dt)
            add(b_nodes, b_nodes, -(w_r + 2 * w_t))
            add(b_nodes, idx(i - 1, jb), w_r)
            add(b_nodes, idx(i, jb + 1), w_t)
            add(b_nodes, idx(i, jb - 1), w_t)
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_unknown, n_unknown))
    solution = spla.splu(A).solve(rhs)  # (n_unknown, n_el)
    grid = np.empty((n_el, n_r + 1, n_t))
    grid[:, 0, :] = solution[0][:, None]
    grid[:, 1:, :] = solution[1:].T.reshape(n_el, n_r, n_t)
    return ElectrodePotentials(radius_nm=R, grid=grid)
