"""Non-linear two-terminal elements of analog circuits: their I-V law, its derivative, energy and SPICE form.

An element is one small frozen dataclass. Its current flows from the anode
to the cathode and depends only on the voltage ``v = V(anode) - V(cathode)``
across it (volts in, amperes out, any tensor shape, float64 advised).
A new element implements :meth:`TwoTerminal.current`,
:meth:`TwoTerminal.conductance` (``di/dv``, siemens),
:meth:`TwoTerminal.co_content` (``∫_0^v i(u) du``, joules per second: the
element's term of the circuit's energy function used by Equilibrium
Propagation) and :meth:`TwoTerminal.spice` (its SPICE lines), and may refine
:meth:`TwoTerminal.limit` (the Newton step limiter, as SPICE's ``pnjlim``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from inmaterio.errors import ConfigError

__all__ = [
    "BOLTZMANN_J_PER_K",
    "ELEMENTARY_CHARGE_C",
    "PiecewiseLinearDiode",
    "ShockleyDiode",
    "TwoTerminal",
    "thermal_voltage",
]

#: CODATA 2018 exact values. ngspice-39 still uses CODATA 2014 (k = 1.38064852e-23, q = 1.6021766208e-19);
#: :mod:`inmaterio.circuits.solve.ngspice` shifts the temperature it passes to ngspice so that both V_T agree.
BOLTZMANN_J_PER_K = 1.380649e-23
ELEMENTARY_CHARGE_C = 1.602176634e-19

#: Exponent above which the Shockley law continues linearly (keeps exp finite; 80 n V_T ~ 2 V at 300 K).
_MAX_EXPONENT = 80.0


def thermal_voltage(temperature_k: float) -> float:
    """``k T / q`` in volts (0.025865 V at 300.15 K)."""
    return BOLTZMANN_J_PER_K * temperature_k / ELEMENTARY_CHARGE_C


def _positive(name: str, value: float, owner: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{owner} {name} must be a finite number > 0, got {value!r}")


class TwoTerminal(ABC):
    """A two-terminal element with a voltage-controlled current ``i(v)`` (A) from anode to cathode."""

    @abstractmethod
    def current(self, v: torch.Tensor) -> torch.Tensor:
        """Current in amperes for the voltage ``v`` (V) across the element, same shape."""

    @abstractmethod
    def conductance(self, v: torch.Tensor) -> torch.Tensor:
        """Small-signal conductance ``di/dv`` in siemens, same shape as ``v``; strictly positive."""

    @abstractmethod
    def co_content(self, v: torch.Tensor) -> torch.Tensor:
        """``∫_0^v i(u) du`` in watts (the element's term of the circuit's co-content)."""

    @abstractmethod
    def spice(self, name: str, anode: str, cathode: str) -> list[str]:
        """SPICE lines (element, and model card if any) for one element named ``name``."""

    def limit(self, v_new: torch.Tensor, v_old: torch.Tensor) -> torch.Tensor:
        """Newton step limiter: the voltage to linearise at next, given the proposed and the previous one."""
        return v_new


@dataclass(frozen=True)
class ShockleyDiode(TwoTerminal):
    """Shockley diode ``i = I_s (exp(v / (n V_T)) - 1) + g_min v``.

    ``g_min`` is the small conductance SPICE puts in parallel with every
    junction (ngspice's default ``gmin`` is 1e-12 S); it keeps nodes behind
    reverse-biased diodes defined. Above ``v = 80 n V_T`` the exponential
    continues linearly (same value and slope), so no voltage overflows.

    Attributes:
        saturation_current_a: ``I_s`` in amperes.
        ideality: ``n`` (emission coefficient, 1 for an ideal junction).
        temperature_k: junction temperature; ``V_T = k T / q``.
        gmin_s: parallel conductance in siemens (>= 0).
    """

    saturation_current_a: float = 1e-12
    ideality: float = 1.0
    temperature_k: float = 300.15
    gmin_s: float = 1e-12

    def __post_init__(self) -> None:
        _positive("saturation_current_a", self.saturation_current_a, "ShockleyDiode")
        _positive("ideality", self.ideality, "ShockleyDiode")
        _positive("temperature_k", self.temperature_k, "ShockleyDiode")
        if not (math.isfinite(self.gmin_s) and self.gmin_s >= 0):
            raise ConfigError(f"ShockleyDiode gmin_s must be a finite number >= 0, got {self.gmin_s!r}")

    @property
    def nvt(self) -> float:
        """``n V_T`` in volts."""
        return self.ideality * thermal_voltage(self.temperature_k)

    @property
    def critical_voltage(self) -> float:
        """SPICE's ``V_crit = n V_T ln(n V_T / (sqrt(2) I_s))``: the limiter acts above it."""
        return self.nvt * math.log(self.nvt / (math.sqrt(2.0) * self.saturation_current_a))

    def _exp(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``exp(x)`` and its derivative in x, continued linearly above the cap, for ``x = v / nVT``."""
        x = v / self.nvt
        capped = torch.clamp(x, max=_MAX_EXPONENT)
        e = torch.exp(capped)
        return e * (1.0 + (x - capped)), e

    def current(self, v: torch.Tensor) -> torch.Tensor:
        e, _ = self._exp(v)
        return self.saturation_current_a * (e - 1.0) + self.gmin_s * v

    def conductance(self, v: torch.Tensor) -> torch.Tensor:
        _, de = self._exp(v)
        return self.saturation_current_a / self.nvt * de + self.gmin_s

    def co_content(self, v: torch.Tensor) -> torch.Tensor:
        x = v / self.nvt
        capped = torch.clamp(x, max=_MAX_EXPONENT)
        e = torch.exp(capped)
        over = x - capped
        integral_exp = self.nvt * (e - 1.0 + e * (over + 0.5 * over**2))
        return self.saturation_current_a * (integral_exp - v) + 0.5 * self.gmin_s * v**2

    def limit(self, v_new: torch.Tensor, v_old: torch.Tensor) -> torch.Tensor:
        """SPICE ``pnjlim``: above ``V_crit`` a forward step grows only logarithmically."""
        nvt = self.nvt
        big_step = (v_new > self.critical_voltage) & ((v_new - v_old).abs() > 2.0 * nvt)
        arg = 1.0 + (v_new - v_old) / nvt
        from_old = torch.where(
            arg > 0, v_old + nvt * torch.log(arg.clamp(min=1e-300)), torch.full_like(v_new, self.critical_voltage)
        )
        from_zero = nvt * torch.log((v_new / nvt).clamp(min=1e-300))
        limited = torch.where(v_old > 0, from_old, from_zero)
        return torch.where(big_step, limited, v_new)

    def spice(self, name: str, anode: str, cathode: str) -> list[str]:
        model = f"dmod_{name}"
        return [
            f"D{name} {anode} {cathode} {model}",
            f".model {model} D(IS={self.saturation_current_a!r} N={self.ideality!r})",
        ]


@dataclass(frozen=True)
class PiecewiseLinearDiode(TwoTerminal):
    """Piecewise-linear ("ideal" in the limit) diode: ``i = g_off v + (g_on - g_off) max(v - V_on, 0)``.

    Off below the knee ``V_on`` (conductance ``g_off``), on above it
    (conductance ``g_on``). With ``g_on -> inf`` and ``g_off -> 0`` it is
    the ideal diode. Newton's method on it is exact within one linear
    region, so the DC solution is found in a few steps.

    Attributes:
        on_conductance_s: ``g_on`` in siemens.
        off_conductance_s: ``g_off`` in siemens (> 0 keeps nodes defined).
        knee_v: ``V_on`` in volts.
    """

    on_conductance_s: float = 1e-3
    off_conductance_s: float = 1e-12
    knee_v: float = 0.0

    def __post_init__(self) -> None:
        _positive("on_conductance_s", self.on_conductance_s, "PiecewiseLinearDiode")
        _positive("off_conductance_s", self.off_conductance_s, "PiecewiseLinearDiode")
        if not math.isfinite(self.knee_v):
            raise ConfigError(f"PiecewiseLinearDiode knee_v must be finite, got {self.knee_v!r}")
        if self.off_conductance_s >= self.on_conductance_s:
            raise ConfigError(
                f"PiecewiseLinearDiode off_conductance_s {self.off_conductance_s} S must be below "
                f"on_conductance_s {self.on_conductance_s} S"
            )

    def current(self, v: torch.Tensor) -> torch.Tensor:
        return self.off_conductance_s * v + (self.on_conductance_s - self.off_conductance_s) * torch.relu(v - self.knee_v)

    def conductance(self, v: torch.Tensor) -> torch.Tensor:
        on = v > self.knee_v
        return torch.where(on, torch.full_like(v, self.on_conductance_s), torch.full_like(v, self.off_conductance_s))

    def co_content(self, v: torch.Tensor) -> torch.Tensor:
        extra = self.on_conductance_s - self.off_conductance_s
        # ∫_0^v relu(u - V_on) du = (relu(v - V_on)^2 - relu(-V_on)^2) / 2
        return 0.5 * self.off_conductance_s * v**2 + 0.5 * extra * (
            torch.relu(v - self.knee_v) ** 2 - max(-self.knee_v, 0.0) ** 2
        )

    def spice(self, name: str, anode: str, cathode: str) -> list[str]:
        g_off, extra, knee = self.off_conductance_s, self.on_conductance_s - self.off_conductance_s, self.knee_v
        v = f"V({anode},{cathode})"
        return [f"B{name} {anode} {cathode} I={g_off!r}*{v}+{extra!r}*max({v}-({knee!r}),0)"]
