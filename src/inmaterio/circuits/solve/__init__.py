"""Circuit solvers: the native batched DC solver (Newton, any circuit), the layered ideal-diode solver and ngspice."""

from inmaterio.circuits.solve.layered import (
    KKTResiduals,
    LayeredNetwork,
    LayeredSolution,
    diode_boxes,
    kkt_residuals,
    layered_energy_w,
    solve_layered,
)
from inmaterio.circuits.solve.native import DCSolution, SolverOptions, kcl_currents, solve_dc

__all__ = [
    "DCSolution",
    "KKTResiduals",
    "LayeredNetwork",
    "LayeredSolution",
    "SolverOptions",
    "diode_boxes",
    "kcl_currents",
    "kkt_residuals",
    "layered_energy_w",
    "solve_dc",
    "solve_layered",
]
