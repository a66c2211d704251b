"""What it costs in hardware: energy, latency and area of crossbar tiles, EP circuits and DNPUs, beside a digital baseline.

One idea per module:

- :mod:`.neurosim`: a NeuroSim-style macro model, module by module (array, level shifters, mux, ADC,
  shift-add, accumulator, control), with Lu et al. (2021)'s calibration factors;
- :mod:`.mapping`: layers onto ``R x C`` subarrays (im2col, row/column splitting, cells per weight,
  utilisation) and NeuroSim's tile floor plan;
- :mod:`.digital`: the digital baseline from Horowitz (ISSCC 2014)'s 45 nm energies;
- :mod:`.circuits`: EP circuits, power at the operating point (Tellegen) times the settling time;
- :mod:`.dnpu`: a DNPU evaluation, electrode power times evaluation time plus converters;
- :mod:`.report`: per-layer and total tables with their assumptions;
- :mod:`.run_costs`: a run folder's report (``inmaterio cost RUN_FOLDER``);
- :mod:`.figure`: energy per inference against accuracy (imports matplotlib, so not re-exported here).

Every number that is not a published one is an assumption with a default, printed with every report;
``docs/howto/costs.md`` lists them and what was and was not reproduced.
"""

from inmaterio.costs.circuits import (
    DEFAULT_SETTLING,
    CircuitCost,
    SettlingAssumption,
    delivered_power_w,
    ep_circuit_cost,
    power_by_part_w,
    settling_time_s,
)
from inmaterio.costs.digital import HOROWITZ_45NM, DigitalCost, DigitalEnergies, digital_cost
from inmaterio.costs.dnpu import DEFAULT_DNPU, DnpuAssumption, DnpuCost, dnpu_evaluation_cost, surrogate_ops
from inmaterio.costs.mapping import (
    VGG8_CIFAR10,
    ArrayGeometry,
    LayerMapping,
    LayerShape,
    cells_per_weight,
    map_layer,
    map_network,
    neurosim_utilisation,
)
from inmaterio.costs.neurosim import (
    LU2021,
    MACRO_PRESETS,
    UNCALIBRATED,
    AdcConfig,
    Calibration,
    MacroConfig,
    MacroCost,
    ModuleCost,
    array_read_energy_j,
    macro_cost,
    ops_per_mvm,
    post_layout_factor,
)
from inmaterio.costs.report import CostLine, CostReport, crossbar_lines, tops_per_w, total_line
from inmaterio.costs.run_costs import COST_FILES, SUPPORTED_KINDS, cost_of_run, write_cost_files

__all__ = [
    "COST_FILES",
    "DEFAULT_DNPU",
    "DEFAULT_SETTLING",
    "HOROWITZ_45NM",
    "LU2021",
    "MACRO_PRESETS",
    "SUPPORTED_KINDS",
    "UNCALIBRATED",
    "VGG8_CIFAR10",
    "AdcConfig",
    "ArrayGeometry",
    "Calibration",
    "CircuitCost",
    "CostLine",
    "CostReport",
    "DigitalCost",
    "DigitalEnergies",
    "DnpuAssumption",
    "DnpuCost",
    "LayerMapping",
    "LayerShape",
    "MacroConfig",
    "MacroCost",
    "ModuleCost",
    "SettlingAssumption",
    "array_read_energy_j",
    "cells_per_weight",
    "cost_of_run",
    "crossbar_lines",
    "delivered_power_w",
    "digital_cost",
    "dnpu_evaluation_cost",
    "ep_circuit_cost",
    "macro_cost",
    "map_layer",
    "map_network",
    "neurosim_utilisation",
    "ops_per_mvm",
    "post_layout_factor",
    "power_by_part_w",
    "settling_time_s",
    "surrogate_ops",
    "tops_per_w",
    "total_line",
    "write_cost_files",
]
