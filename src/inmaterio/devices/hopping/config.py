"""Parameters of the kinetic Monte Carlo virtual DNPU, with units and defaults.

See :mod:`inmaterio.devices.hopping` for the physics these parameters enter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inmaterio.config import StrictModel

__all__ = ["HoppingConfig"]

_MAX_GRID_RINGS = 400  # the Laplace solve grows as rings^2 (about a minute at 300 rings)
_MAX_PACKING = 0.3  # area fraction of exclusion discs; random sequential addition jams near 0.55


class HoppingConfig(StrictModel):
    """Geometry, material, simulation and accuracy parameters of a :class:`HoppingDevice`.

    The ``seed`` is the chip: it places the dopants, so different seeds are
    different devices. Simulation randomness is seeded from it as well.
    """

    seed: int = Field(0, ge=0, description="places the dopants (the chip) and seeds the Monte Carlo")
    # geometry
    radius_nm: float = Field(150.0, gt=0, description="radius of the disc, nm")
    n_electrodes: int = Field(8, ge=2, le=32, description="electrodes on the rim, evenly spaced")
    electrode_width_nm: float = Field(60.0, gt=0, description="arc length of each electrode, nm")
    readout_electrode: int = Field(7, ge=0, description="index of the readout electrode (held at 0 V)")
    voltage_ranges_v: list[tuple[float, float]] | None = Field(
        None, description="[low, high] V per activation electrode; default [-1.2, 0.6] for each"
    )
    # dopants
    n_acceptors: int = Field(200, ge=1, le=2000, description="boron acceptor sites (hopping sites)")
    n_donors: int = Field(3, ge=0, le=2000, description="fixed compensating donors, each of charge +e")
    min_site_distance_nm: float = Field(2.0, ge=0, description="dopants closer than this are redrawn, nm")
    # material
    localization_length_nm: float = Field(20.0, gt=0, description="a in exp(-2r/a), nm")
    temperature_k: float = Field(77.0, gt=0, description="lattice temperature, K")
    attempt_frequency_hz: float = Field(1.0e12, gt=0, description="nu0 in the Miller-Abrahams rate, 1/s")
    relative_permittivity: float = Field(11.7, gt=0, description="of the host (silicon: 11.7)")
    coulomb_interactions: bool = Field(True, description="Coulomb energy between charged dopants")
    energy_disorder_ev: float = Field(0.0, ge=0, description="std of Gaussian site-energy disorder, eV")
    fermi_level_ev: float = Field(
        0.02,
        description="electrode Fermi level relative to the bare acceptor level at 0 V, eV; the default makes the "
        "default device nearly charge neutral at 0 V and 77 K (about n_donors empty acceptors), the lightly "
        "compensated regime where conduction is thermally activated",
    )
    site_cutoff_nm: float = Field(60.0, gt=0, description="no hops between sites farther apart, nm")
    electrode_cutoff_nm: float = Field(60.0, gt=0, description="no hops between a site and an electrode farther apart, nm")
    # electrostatics
    grid_spacing_nm: float = Field(2.5, gt=0, description="finite-difference grid of the Laplace solve, nm")
    # Monte Carlo accuracy
    equilibration_hops: int = Field(20_000, ge=0, description="hops discarded before averaging")
    block_hops: int = Field(20_000, ge=100, description="hops per averaging block (standard error from block means)")
    min_blocks: int = Field(4, ge=2, description="blocks always averaged")
    max_blocks: int = Field(64, ge=2, description="blocks at most per operating point")
    rel_tolerance: float = Field(0.02, gt=0, description="stop when stderr < rel_tolerance * |I| ...")
    abs_tolerance_na: float = Field(0.5, gt=0, description="... or when stderr < abs_tolerance_na")
    current_estimator: Literal["counting", "ramo_shockley"] = Field(
        "counting",
        description="readout current from the holes counted into the readout, or from the time average of the "
        "expected Ramo-Shockley flux (the same mean; on the default device less variance, so fewer hops per point at "
        "a given tolerance)",
    )

    @model_validator(mode="after")
    def _check(self) -> HoppingConfig:
        if self.readout_electrode >= self.n_electrodes:
            raise ValueError(
                f"readout_electrode {self.readout_electrode} outside [0, {self.n_electrodes - 1}] "
                f"(there are {self.n_electrodes} electrodes)"
            )
        if self.voltage_ranges_v is not None:
            if len(self.voltage_ranges_v) != self.n_electrodes - 1:
                raise ValueError(
                    f"voltage_ranges_v has {len(self.voltage_ranges_v)} entries, expected one per "
                    f"activation electrode ({self.n_electrodes - 1})"
                )
            for k, (lo, hi) in enumerate(self.voltage_ranges_v):
                if not lo < hi:
                    raise ValueError(f"voltage_ranges_v[{k}] = [{lo}, {hi}] V must have low < high")
        if self.max_blocks < self.min_blocks:
            raise ValueError(f"max_blocks {self.max_blocks} must be >= min_blocks {self.min_blocks}")
        rings = self.radius_nm / self.grid_spacing_nm
        if rings > _MAX_GRID_RINGS:
            raise ValueError(
                f"grid_spacing_nm {self.grid_spacing_nm} gives {rings:.0f} grid rings over radius_nm {self.radius_nm}; "
                f"at most {_MAX_GRID_RINGS} (grid_spacing_nm >= {self.radius_nm / _MAX_GRID_RINGS:.3g} nm)"
            )
        packing = (self.n_acceptors + self.n_donors) * self.min_site_distance_nm**2 / (4 * self.radius_nm**2)
        if packing > _MAX_PACKING:
            raise ValueError(
                f"{self.n_acceptors + self.n_donors} dopants (n_acceptors + n_donors) at least min_site_distance_nm "
                f"{self.min_site_distance_nm} nm apart would cover {packing:.0%} of the disc of radius_nm {self.radius_nm}; "
                f"at most {_MAX_PACKING:.0%} can be placed at random"
            )
        width_angle = self.electrode_width_nm / self.radius_nm
        if width_angle * self.n_electrodes >= 2 * 3.141592653589793:
            raise ValueError(
                f"electrode_width_nm {self.electrode_width_nm} too wide: {self.n_electrodes} electrodes of that "
                f"width do not fit on a rim of circumference {2 * 3.141592653589793 * self.radius_nm:.1f} nm"
            )
        return self

    def activation_ranges(self) -> list[tuple[float, float]]:
        """[low, high] V per activation electrode (the defaults filled in)."""
        if self.voltage_ranges_v is not None:
            return [tuple(r) for r in self.voltage_ranges_v]
        return [(-1.2, 0.6)] * (self.n_electrodes - 1)
