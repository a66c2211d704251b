"""``HoppingDevice``: the kinetic Monte Carlo virtual DNPU behind the Device interface.

Physics, constants and conventions: see :mod:`inmaterio.devices.hopping`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

import inmaterio
from inmaterio.devices.base import Device, Electrode, Measurement
from inmaterio.devices.hopping.config import HoppingConfig
from inmaterio.devices.hopping.electrostatics import ElectrodePotentials, solve_electrode_potentials
from inmaterio.devices.hopping.geometry import Dopants, distance_to_arcs, place_dopants
from inmaterio.devices.hopping.kmc import MAX_REJECTIONS, simulate_batch
from inmaterio.errors import ConfigError, SimulationError
from inmaterio.random_streams import stream_seeds

__all__ = ["HoppingDevice", "HoppingResult", "ELEMENTARY_CHARGE_C", "BOLTZMANN_EV_PER_K", "COULOMB_EV_NM"]

ELEMENTARY_CHARGE_C = 1.602176634e-19
"""Elementary charge, C."""
BOLTZMANN_EV_PER_K = 8.617333262e-5
"""Boltzmann constant, eV/K."""
COULOMB_EV_NM = 1.439964548
"""e^2 / (4 pi eps0), eV nm (divide by eps_r and the distance in nm)."""
_HOLES_PER_S_TO_NA = ELEMENTARY_CHARGE_C * 1e9
_MAX_EXPONENT = 600.0  # Boltzmann factors exp(beta * dE) must stay inside float64


@dataclass(frozen=True)
class HoppingResult:
    """Everything one batch of kinetic Monte Carlo runs measured.

    Attributes
    ----------
    current_na : (B,) mean readout current, nA (positive into the readout), from the configured
        ``current_estimator`` (with ``counting`` the readout column of ``electrode_current_na``).
    stderr_na : (B,) its standard error from block means, nA.
    electrode_current_na : (B, M) current into every electrode (readout included), nA: net holes
        counted entering it per second of simulated time.
    occupation : (B, N) time-averaged hole occupation of every acceptor, in [0, 1].
    hops : (B,) hops simulated (equilibration included).
    simulated_time_s : (B,) simulated time of the averaging phase, s.
    """

    current_na: np.ndarray
    stderr_na: np.ndarray
    electrode_current_na: np.ndarray
    occupation: np.ndarray
    hops: np.ndarray
    simulated_time_s: np.ndarray


class HoppingDevice(Device):
    """Virtual DNPU simulated by kinetic Monte Carlo of variable-range hopping.

    Parameters
    ----------
    config : a :class:`HoppingConfig`; or give its fields as keyword arguments.
    n_threads : threads for a batch, each taking the next operating point when free
        (default: ``numba.config.NUMBA_NUM_THREADS``, all cores unless set).

    Examples
    --------
    >>> dev = HoppingDevice(seed=0)
    >>> current_na = dev.measure(np.zeros((1, 7)))  # one operating point, every activation electrode at 0 V
    >>> current_na.shape, current_na.dtype  # a noisy mean near 0 nA (no bias, no net current)
    ((1,), dtype('float64'))
    """

    #: detailed balance: with every electrode at 0 V no net current flows (on average)
    zero_bias_current_na = 0.0

    def __init__(self, config: HoppingConfig | None = None, *, n_threads: int | None = None, **params: Any) -> None:
        if config is None:
            config = HoppingConfig(**params)
        elif params:
            config = HoppingConfig(**{**config.model_dump(), **params})
        if n_threads is not None and (
            isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1
        ):
            raise ConfigError(f"field 'n_threads' = {n_threads!r}: must be a whole number >= 1, or None for all cores")
        self.config = config
        self.n_threads = n_threads
        c = config
        names = [f"e{k}" for k in range(c.n_electrodes)]
        self.readout_index = c.readout_electrode
        self.readout_name = names[c.readout_electrode]
        self.activation_indices = [k for k in range(c.n_electrodes) if k != c.readout_electrode]
        self.electrodes = tuple(
            Electrode(names[k], lo, hi) for k, (lo, hi) in zip(self.activation_indices, c.activation_ranges())
        )

        self.beta = 1.0 / (BOLTZMANN_EV_PER_K * c.temperature_k)
        placed = place_dopants(c)
        # store the acceptors sorted by x: the neighbours of a site then have nearby indices, so a pass over
        # its row reads their Boltzmann factors from a few cache lines (see kmc._rate_and_flux)
        self.dopants: Dopants = Dopants(placed.acceptors[np.argsort(placed.acceptors[:, 0], kind="stable")], placed.donors)
        self.potentials: ElectrodePotentials = solve_electrode_potentials(c)
        acc = self.dopants.acceptors
        n = len(acc)
        k_coul = COULOMB_EV_NM / c.relative_permittivity
        dist = np.sqrt(((acc[:, None, :] - acc[None, :, :]) ** 2).sum(-1))

        # occupation-independent energy (eV) per site, without the electrode potential
        rng = np.random.default_rng([c.seed, 0xD150])
        static = rng.normal(0.0, c.energy_disorder_ev, n) if c.energy_disorder_ev > 0 else np.zeros(n)
        if c.coulomb_interactions:
            if len(self.dopants.donors):
                dd = np.sqrt(((acc[:, None, :] - self.dopants.donors[None, :, :]) ** 2).sum(-1))
                static = static + (k_coul / dd).sum(1)
            with np.errstate(divide="ignore"):
                coul = np.where(dist > 0, k_coul / dist, 0.0)
        else:
            coul = np.zeros((n, n))
        self.static_energy_ev = static
        self.coulomb_ev = coul
        self._ecoul = np.exp(self.beta * coul)
        self._iecoul = np.exp(-self.beta * coul)
        # potential basis at the sites: (M, N) volts per volt on electrode k
        self.site_potential_basis = self.potentials.at(acc)
        # the readout's weighting potential at the sites (the Ramo-Shockley estimator's weights)
        self._readout_weight = np.ascontiguousarray(self.site_potential_basis[self.readout_index])

        # compact neighbour rows (sites within the cut-off, in index order) and their rate prefactors
        # nu0 exp(-2 r / a), 1/s, and the same times exp(beta * C)
        nu0, a_loc = c.attempt_frequency_hz, c.localization_length_nm
        mask = (dist > 0) & (dist < c.site_cutoff_nm)
        self._n_nbr = mask.sum(1).astype(np.int64)
        width = max(int(self._n_nbr.max()), 1)
        listed = np.arange(width) < self._n_nbr[:, None]  # (N, K): the row's real entries, then padding
        # a stable sort of "not a neighbour" puts each row's neighbours first, in index order; padding points at site 0
        self._nbr = np.where(listed, np.argsort(~mask, axis=1, kind="stable")[:, :width], 0).astype(np.int32)
        self._pair_w = np.where(listed, nu0 * np.exp(-2 * np.take_along_axis(dist, self._nbr, 1) / a_loc), 0.0)
        self._pair_wx = self._pair_w * np.exp(self.beta * np.take_along_axis(coul, self._nbr, 1))
        # the readout's weighting potential at each row's neighbours (a contiguous read in the Ramo-Shockley pass)
        self._nbr_weight = self._readout_weight[self._nbr]
        de = distance_to_arcs(acc, c)
        emask = de < c.electrode_cutoff_nm
        self._elec_ptr = np.concatenate([[0], np.cumsum(emask.sum(1))]).astype(np.int64)
        erows, ecols = np.nonzero(emask)
        self._elec_idx = ecols.astype(np.int64)
        self._elec_w = nu0 * np.exp(-2 * de[erows, ecols] / a_loc)
        for k in range(c.n_electrodes):
            if not np.any(ecols == k):
                raise SimulationError(
                    f"electrode e{k} has no acceptor within electrode_cutoff_nm={c.electrode_cutoff_nm} nm; "
                    "raise the cut-off or the acceptor count"
                )
        self._coulomb_bound = float(np.abs(coul).sum(1).max()) if c.coulomb_interactions else 0.0

    # ------------------------------------------------------------------ interface
    def describe(self) -> dict[str, Any]:
        """``{"type": "hopping", "package_version": ..., <every HoppingConfig field>}`` (the registry's spec)."""
        return {"type": "hopping", "package_version": inmaterio.__version__, **self.config.model_dump(mode="json")}

    def _measure(self, voltages: np.ndarray) -> Measurement:
        result = self._simulate(voltages)
        return Measurement(result.current_na, result.stderr_na)

    def simulate(self, voltages: Any) -> HoppingResult:
        """Run the Monte Carlo for voltages ``(batch, n_activation)`` V; return every observable."""
        return self._simulate(self.check_voltages(voltages))

    # ------------------------------------------------------------------ internals
    def full_voltages(self, voltages: np.ndarray) -> np.ndarray:
        """Insert the readout's 0 V: ``(batch, n_activation)`` -> ``(batch, n_electrodes)`` V."""
        full = np.zeros((voltages.shape[0], self.config.n_electrodes))
        full[:, self.activation_indices] = voltages
        return full

    def _stream_seeds(self, voltages: np.ndarray) -> np.ndarray:
        """One uint64 seed per operating point, from (chip seed, the call's stream key, the voltages).

        The stream key comes from :meth:`Device.next_stream_key`: inside a
        :meth:`Device.random_streams` block it names what the call serves, so a resumed
        acquisition measures its remaining batches exactly as an uninterrupted one would.
        """
        # + 0.0 turns -0.0 into 0.0: the same voltages give the same stream whatever their sign bit
        digest = int.from_bytes(hashlib.blake2b((voltages + 0.0).tobytes(), digest_size=8).digest(), "little")
        return stream_seeds(len(voltages), self.config.seed, *self.next_stream_key(), digest)

    def _simulate(self, voltages: np.ndarray) -> HoppingResult:
        c = self.config
        full = self.full_voltages(voltages)
        site_energy = full @ self.site_potential_basis + self.static_energy_ev[None, :]
        mu = full + c.fermi_level_ev
        e_ref = 0.5 * (np.concatenate([site_energy, mu], 1).max(1) + np.concatenate([site_energy, mu], 1).min(1))
        spread = np.maximum(np.abs(site_energy - e_ref[:, None]).max(1) + self._coulomb_bound, np.abs(mu - e_ref[:, None]).max(1))
        if np.any(self.beta * spread > _MAX_EXPONENT):
            worst = int(np.argmax(spread))
            raise SimulationError(
                f"sample {worst}: energy spread {spread[worst]:.3f} eV is {self.beta * spread[worst]:.0f} kT at "
                f"temperature_k={c.temperature_k}; Boltzmann factors would overflow (limit {_MAX_EXPONENT:.0f} kT). "
                "Raise the temperature or lower the voltages."
            )
        seeds = self._stream_seeds(voltages)
        abs_tol_holes = c.abs_tolerance_na / _HOLES_PER_S_TO_NA
        batch, n_sites = site_energy.shape
        elec = np.zeros((batch, c.n_electrodes))
        occupation = np.zeros((batch, n_sites))
        stats = np.zeros((batch, 5))
        simulate_batch(
            site_energy, mu, e_ref, self.beta, self.coulomb_ev, self._ecoul, self._iecoul, c.coulomb_interactions,
            self._pair_w, self._pair_wx, self._nbr, self._n_nbr, self._elec_ptr, self._elec_idx, self._elec_w,
            self.readout_index, self._readout_weight, self._nbr_weight, c.current_estimator == "ramo_shockley",
            c.equilibration_hops, c.block_hops, c.min_blocks, c.max_blocks,
            c.rel_tolerance, abs_tol_holes, seeds, elec, occupation, stats,
            self.n_threads if self.n_threads is not None else numba.config.NUMBA_NUM_THREADS,
        )  # fmt: skip
        if np.any(stats[:, 4] != 0):
            worst = int(np.argmax(stats[:, 4]))
            raise SimulationError(
                f"sample {worst}: no hop made in {MAX_REJECTIONS:,} proposals (every rate is zero or below float64's "
                "range); check the cut-offs and the temperature"
            )
        return HoppingResult(
            current_na=stats[:, 0] * _HOLES_PER_S_TO_NA,
            stderr_na=stats[:, 1] * _HOLES_PER_S_TO_NA,
            electrode_current_na=elec * _HOLES_PER_S_TO_NA,
            occupation=occupation,
            hops=stats[:, 2].astype(np.int64),
            simulated_time_s=stats[:, 3],
        )
