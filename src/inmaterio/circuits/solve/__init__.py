"""Circuit solvers: the native batched DC solver and the ngspice back end."""

from inmaterio.circuits.solve.native import DCSolution, SolverOptions, kcl_currents, solve_dc

__all__ = ["DCSolution", "SolverOptions", "kcl_currents", "solve_dc"]
