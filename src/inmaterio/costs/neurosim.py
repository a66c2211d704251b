r"""A NeuroSim-style cost model of one compute-in-memory macro, module by module, with Lu et al.'s calibration.

One *macro* is an ``R x C`` array of cells with its periphery. A matrix-vector
multiply (MVM) applies an ``input_bits``-bit input vector **bit-serially**
(one read cycle per input bit, all rows at once) and converts every column
once per bit; ``cols_per_adc`` columns share one ADC through a multiplexer.
Per MVM, with :math:`n_b` input bits, input-bit activity :math:`a` (the
fraction of rows driven in a bit plane), supply :math:`V_{dd}`:

- **array** (read energy from the conductances):
  :math:`E = \sum_b \sum_{i,j} x^b_i\, G_{ij}\, V_r^2\, t_r`
  (:func:`array_read_energy_j`; without a matrix, :math:`n_b\,a\,R\,C\,\bar G V_r^2 t_r`);
- **word-line drivers / level shifters** (the DAC of a bit-serial input):
  :math:`E = n_b\,a\,R\,(C_{wl} V_{wl}^2)`; area
  :math:`N_{ls} \cdot A_{ls} \cdot \alpha` (Lu et al.'s wiring factor :math:`\alpha`);
- **column mux**: :math:`E = n_b\,C\,\zeta\,C_{mux} V_{dd}^2` (select logic switching with activity :math:`\zeta`);
- **ADC** (:class:`AdcConfig`): :math:`n_b C` conversions of energy
  :math:`(2^{k}-1) E_{cmp}` (flash) or :math:`F_W 2^{k}` (SAR, Walden figure of merit),
  a conversion taking one comparator delay (flash) or :math:`k` of them (SAR);
- **shift-add** (combines the bit-serial partial sums): per conversion an adder
  and a register of :math:`w = k + n_b` bits,
  :math:`E = n_b C\, w\,(\gamma\, E_{dff} + \delta\, E_{fa})`;
- **accumulator** (combines the cells of a weight and the row blocks): per
  output weight and cell a :math:`w_a = w + \text{cell bits}`-bit add and register,
  :math:`E = C\, w_a (\gamma E_{dff} + \delta E_{fa})`;
- **control**: :math:`E = \varepsilon\, N_{ctrl}\, E_{gate}` per clock cycle,

with :math:`E_{dff} = C_{dff} V_{dd}^2`, :math:`E_{fa} = C_{fa} V_{dd}^2`,
:math:`E_{gate} = C_{gate} V_{dd}^2`. The clock is set by the sensing cycle
(read pulse + one conversion) stretched by :math:`\beta`; an MVM takes
:math:`n_b \cdot` ``cols_per_adc`` cycles. The macro's energy is the sum of
the modules times the post-layout factor :math:`\eta`.

**Calibration** (:class:`Calibration`, Lu, Peng, Li, Jiang & Yu, *NeuroSim
Simulator for Compute-in-Memory Hardware Accelerator: Validation and
Benchmark*, Front. Artif. Intell. 4, 659060, 2021; 40 nm RRAM macro):
:math:`\alpha = 1.44` (level-shifter wiring area), :math:`\beta = 1.4`
(sensing latency), switching activities :math:`\gamma = 50\%` (registers of
shift-add and accumulator), :math:`\delta = 15\%` (adders), :math:`\varepsilon = 5\%`
(control), :math:`\zeta = 11\%` (applied here to the mux select logic; the
module the paper applies it to could not be checked, see ``docs/howto/costs.md``),
and :math:`\eta = 1.22` post-layout energy. :data:`UNCALIBRATED` sets them
all to 1 (NeuroSim before validation: every gate switches every cycle).

Every number of the :data:`MACRO_PRESETS` beyond those factors and the
macro's published organisation is an assumption, listed by :meth:`MacroConfig.assumptions`.
Units: volts, siemens, farads, seconds, joules, µm².
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch
from pydantic import Field, model_validator

from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError

__all__ = [
    "AdcConfig",
    "Calibration",
    "LU2021",
    "UNCALIBRATED",
    "MacroConfig",
    "MacroCost",
    "ModuleCost",
    "MACRO_PRESETS",
    "array_read_energy_j",
    "macro_cost",
    "ops_per_mvm",
    "post_layout_factor",
]


class Calibration(StrictModel):
    """Lu et al. (2021)'s adjustment factors (see the module docstring); all 1 is NeuroSim uncalibrated.

    alpha : level-shifter area factor (wiring in the layout), > 0.
    beta : sensing-cycle latency factor, > 0.
    gamma : switching activity of the registers (DFFs) of shift-add and accumulator, in (0, 1].
    delta : switching activity of the adders, in (0, 1].
    epsilon : switching activity of the control circuits, in (0, 1].
    zeta : switching activity of the mux select logic, in (0, 1].
    eta : post-layout energy factor, > 0.
    """

    alpha: float = Field(1.44, gt=0)
    beta: float = Field(1.4, gt=0)
    gamma: float = Field(0.5, gt=0, le=1)
    delta: float = Field(0.15, gt=0, le=1)
    epsilon: float = Field(0.05, gt=0, le=1)
    zeta: float = Field(0.11, gt=0, le=1)
    eta: float = Field(1.22, gt=0)


#: Lu et al. (2021)'s factors.
LU2021 = Calibration()
#: No calibration: every factor 1.
UNCALIBRATED = Calibration(alpha=1.0, beta=1.0, gamma=1.0, delta=1.0, epsilon=1.0, zeta=1.0, eta=1.0)


def post_layout_factor(post_layout_energy: float, pre_layout_energy: float) -> float:
    """The post-layout energy factor ``eta = post / pre`` (any one energy unit for both, each > 0)."""
    for name, value in (("post_layout_energy", post_layout_energy), ("pre_layout_energy", pre_layout_energy)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return post_layout_energy / pre_layout_energy


def ops_per_mvm(rows: int, cols: int) -> int:
    """Operations of one full ``rows x cols`` MVM: a multiply and an add per cell, ``2 * rows * cols``."""
    if rows < 1 or cols < 1:
        raise ConfigError(f"rows and cols must be >= 1, got rows={rows}, cols={cols}")
    return 2 * rows * cols


class AdcConfig(StrictModel):
    """An ADC per ``cols_per_adc`` columns.

    kind : ``flash`` ((2^bits - 1) comparators, one comparator delay) or ``sar`` (bits comparator delays).
    bits : resolution (1 .. 16).
    comparator_energy_j : energy of one comparator decision (flash), J (>= 0).
    walden_fom_j : SAR energy per conversion step, E = fom * 2^bits, J (>= 0).
    comparator_delay_s : one comparator decision (flash) or one SAR bit cycle, s (> 0).
    area_um2 : area of one ADC, µm² (>= 0).
    """

    kind: Literal["flash", "sar"] = "sar"
    bits: int = Field(5, ge=1, le=16)
    comparator_energy_j: float = Field(20e-15, ge=0)
    walden_fom_j: float = Field(5e-15, ge=0)
    comparator_delay_s: float = Field(1e-9, gt=0)
    area_um2: float = Field(300.0, ge=0)

    def energy_per_conversion_j(self) -> float:
        """Energy of one conversion, J."""
        if self.kind == "flash":
            return (2**self.bits - 1) * self.comparator_energy_j
        return self.walden_fom_j * 2**self.bits

    def conversion_time_s(self) -> float:
        """Time of one conversion, s."""
        return self.comparator_delay_s * (1 if self.kind == "flash" else self.bits)


class MacroConfig(StrictModel):
    """One macro: array size, cells, periphery, technology (see the module docstring for the formulas).

    rows, cols : cells of the array (>= 1).
    cell_bits : bits per cell (>= 1; an analog cell: the bits its conductance resolves).
    input_bits : bits of an input, applied bit-serially (>= 1).
    input_activity : fraction of rows driven per input bit, in [0, 1].
    cols_per_adc : columns sharing one ADC through the mux (divides ``cols``).
    cell_area_um2 : area of one cell, µm².
    read_voltage_v : read voltage across a selected cell, V.
    read_pulse_s : read pulse width, s.
    mean_conductance_s : mean cell conductance when no matrix is given, S.
    supply_v : logic supply V_dd, V.
    wl_capacitance_f, wl_voltage_v : a word line's capacitance (F) and swing (V).
    level_shifter_lines, level_shifters_per_line, level_shifter_area_um2 : level shifters (count = lines x per line) and
        one's area (µm²) before the wiring factor alpha.
    mux_capacitance_f, mux_area_um2 : switched capacitance of one column select (F) and a column switch's area (µm²).
    dff_capacitance_f, adder_capacitance_f, gate_capacitance_f : switched capacitance of a register bit, a full-adder
        bit and a control gate (F).
    dff_area_um2, adder_area_um2, gate_area_um2 : their areas (µm²).
    control_gates : gates of the control logic.
    adc : the ADC.
    calibration : the adjustment factors.
    """

    rows: int = Field(128, ge=1)
    cols: int = Field(128, ge=1)
    cell_bits: int = Field(1, ge=1, le=16)
    input_bits: int = Field(8, ge=1, le=32)
    input_activity: float = Field(0.5, ge=0, le=1)
    cols_per_adc: int = Field(8, ge=1)
    cell_area_um2: float = Field(0.0768, gt=0)
    read_voltage_v: float = Field(0.2, gt=0)
    read_pulse_s: float = Field(10e-9, gt=0)
    mean_conductance_s: float = Field(20e-6, ge=0)
    supply_v: float = Field(0.9, gt=0)
    wl_capacitance_f: float = Field(30e-15, ge=0)
    wl_voltage_v: float = Field(1.1, gt=0)
    level_shifter_lines: int = Field(256, ge=0)
    level_shifters_per_line: int = Field(3, ge=0)
    level_shifter_area_um2: float = Field(28.0, ge=0)
    mux_capacitance_f: float = Field(2e-15, ge=0)
    mux_area_um2: float = Field(1.0, ge=0)
    dff_capacitance_f: float = Field(5e-15, ge=0)
    adder_capacitance_f: float = Field(4e-15, ge=0)
    gate_capacitance_f: float = Field(1e-15, ge=0)
    dff_area_um2: float = Field(4.0, ge=0)
    adder_area_um2: float = Field(3.0, ge=0)
    gate_area_um2: float = Field(0.6, ge=0)
    control_gates: int = Field(500, ge=0)
    adc: AdcConfig = AdcConfig()
    calibration: Calibration = LU2021

    @model_validator(mode="after")
    def _mux_divides_columns(self) -> MacroConfig:
        if self.cols % self.cols_per_adc:
            raise ValueError(f"cols_per_adc = {self.cols_per_adc} must divide cols = {self.cols}")
        return self

    @property
    def n_adc(self) -> int:
        """ADCs of the macro: ``cols / cols_per_adc``."""
        return self.cols // self.cols_per_adc

    def assumptions(self) -> dict[str, float | int | str]:
        """Every number of the model, flat, for reports."""
        out: dict[str, float | int | str] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, dict):
                out.update({f"{name}.{k}": v for k, v in value.items()})
            else:
                out[name] = value
        return out


@dataclass(frozen=True)
class ModuleCost:
    """One module of a macro for one MVM: ``energy_j`` (calibrated activities, before eta), ``raw_energy_j`` (all
    activities 1), ``area_um2`` (with alpha where it applies) and whether it is ``analog``."""

    name: str
    energy_j: float
    raw_energy_j: float
    area_um2: float
    analog: bool


@dataclass(frozen=True)
class MacroCost:
    """Cost of one MVM on one macro.

    Attributes:
        modules: per module (array, level_shifter, mux, adc, shift_add, accumulator, control).
        energy_j: ``eta * sum(module energies)``, J.
        latency_s: ``cycles * clock_s``.
        clock_s: ``beta * (read pulse + one conversion)``.
        cycles: ``input_bits * cols_per_adc``.
        ops: ``2 * rows * cols``.
    """

    modules: tuple[ModuleCost, ...]
    energy_j: float
    latency_s: float
    clock_s: float
    cycles: int
    ops: int

    def module(self, name: str) -> ModuleCost:
        """The module called ``name``."""
        for m in self.modules:
            if m.name == name:
                return m
        raise ConfigError(f"no module {name!r}; modules: {[m.name for m in self.modules]}")

    @property
    def area_um2(self) -> float:
        """Total area, µm²."""
        return sum(m.area_um2 for m in self.modules)

    @property
    def analog_area_um2(self) -> float:
        """Area of the analog modules (array, level shifters, mux, ADC), µm²."""
        return sum(m.area_um2 for m in self.modules if m.analog)

    @property
    def tops_per_w(self) -> float:
        """``ops / energy`` in 10^12 operations per joule (= TOPS/W)."""
        return self.ops / self.energy_j / 1e12


def array_read_energy_j(
    conductances_s: torch.Tensor, input_bits: torch.Tensor, read_voltage_v: float, read_pulse_s: float
) -> torch.Tensor:
    r"""Energy of reading an array bit-serially: :math:`\sum_b \sum_{i,j} x^b_i G_{ij} V_r^2 t_r` (J).

    Args:
        conductances_s: ``(rows, cols)`` cell conductances, S (>= 0).
        input_bits: ``(..., n_bits, rows)`` bit planes of the inputs, 0 or 1 (a row at 1 is driven at ``read_voltage_v``).
        read_voltage_v: read voltage, V.
        read_pulse_s: pulse width, s.

    Returns:
        ``(...)`` energy per input vector, J.
    """
    if conductances_s.dim() != 2:
        raise ConfigError(f"conductances_s must be (rows, cols), got shape {tuple(conductances_s.shape)}")
    if input_bits.dim() < 2 or input_bits.shape[-1] != conductances_s.shape[0]:
        raise ConfigError(
            f"input_bits must be (..., n_bits, rows={conductances_s.shape[0]}), got shape {tuple(input_bits.shape)}"
        )
    if (conductances_s < 0).any():
        raise ConfigError(f"conductances_s must be >= 0, got minimum {conductances_s.min().item()} S")
    row_conductance = conductances_s.sum(1).to(torch.float64)  # (rows,) S seen by a driven row
    return (input_bits.to(torch.float64) @ row_conductance).sum(-1) * read_voltage_v**2 * read_pulse_s


def macro_cost(config: MacroConfig, conductances_s: torch.Tensor | None = None) -> MacroCost:
    """Energy, latency and area of one MVM on a macro (formulas in the module docstring).

    Args:
        config: the macro.
        conductances_s: ``(rows, cols)`` conductances, S; None: ``mean_conductance_s`` everywhere.
    """
    c, cal = config, config.calibration
    nb, a = c.input_bits, c.input_activity
    if conductances_s is None:
        g_sum = c.rows * c.cols * c.mean_conductance_s
    else:
        if tuple(conductances_s.shape) != (c.rows, c.cols):
            raise ConfigError(f"conductances_s must be ({c.rows}, {c.cols}), got shape {tuple(conductances_s.shape)}")
        if (conductances_s < 0).any():
            raise ConfigError(f"conductances_s must be >= 0, got minimum {conductances_s.min().item()} S")
        g_sum = float(conductances_s.sum())
    vdd2 = c.supply_v**2
    e_dff, e_fa, e_gate = c.dff_capacitance_f * vdd2, c.adder_capacitance_f * vdd2, c.gate_capacitance_f * vdd2
    conversions = nb * c.cols
    w = c.adc.bits + nb  # shift-add width
    w_acc = w + c.cell_bits
    cycles = nb * c.cols_per_adc
    array_e = nb * a * g_sum * c.read_voltage_v**2 * c.read_pulse_s
    wl_e = nb * a * c.rows * c.wl_capacitance_f * c.wl_voltage_v**2
    n_ls = c.level_shifter_lines * c.level_shifters_per_line
    mux_raw = conversions * c.mux_capacitance_f * vdd2
    adc_e = conversions * c.adc.energy_per_conversion_j()
    sa_dff, sa_fa = conversions * w * e_dff, conversions * w * e_fa
    acc_dff, acc_fa = c.cols * w_acc * e_dff, c.cols * w_acc * e_fa
    ctrl_raw = cycles * c.control_gates * e_gate
    modules = (
        ModuleCost("array", array_e, array_e, c.rows * c.cols * c.cell_area_um2, True),
        ModuleCost("level_shifter", wl_e, wl_e, n_ls * c.level_shifter_area_um2 * cal.alpha, True),
        ModuleCost("mux", cal.zeta * mux_raw, mux_raw, c.cols * c.mux_area_um2, True),
        ModuleCost("adc", adc_e, adc_e, c.n_adc * c.adc.area_um2, True),
        ModuleCost(
            "shift_add", cal.gamma * sa_dff + cal.delta * sa_fa, sa_dff + sa_fa, c.n_adc * w * (c.dff_area_um2 + c.adder_area_um2), False
        ),
        ModuleCost(
            "accumulator", cal.gamma * acc_dff + cal.delta * acc_fa, acc_dff + acc_fa, c.n_adc * w_acc * (c.dff_area_um2 + c.adder_area_um2), False
        ),
        ModuleCost("control", cal.epsilon * ctrl_raw, ctrl_raw, c.control_gates * c.gate_area_um2, False),
    )  # fmt: skip
    clock = cal.beta * (c.read_pulse_s + c.adc.conversion_time_s())
    energy = cal.eta * sum(m.energy_j for m in modules)
    return MacroCost(modules, energy, cycles * clock, clock, cycles, ops_per_mvm(c.rows, c.cols))


#: Macro presets. ``lu2021_rram40``: the organisation of Lu et al.'s 40 nm RRAM macro as far as the issue states it
#: (128 x 128 cells, 256 x 3 level shifters of 28 µm², their factors); ``pcm_analog``: a 128 x 128 PCM tile of
#: this project (analog cells on differential pairs, 7-bit inputs, 9-bit ADC); ``sram_1bit``: 1-bit SRAM cells.
#: Every other number is an assumption of typical 40 nm values, printed with every report.
MACRO_PRESETS: Mapping[str, MacroConfig] = MappingProxyType(
    {
        "lu2021_rram40": MacroConfig(),
        "pcm_analog": MacroConfig(
            cell_bits=4, input_bits=7, adc=AdcConfig(kind="sar", bits=9), mean_conductance_s=6.25e-6, read_voltage_v=0.2
        ),
        "sram_1bit": MacroConfig(cell_bits=1, cell_area_um2=0.4, mean_conductance_s=10e-6, level_shifter_lines=0),
    }
)
