"""Cost models against independent truths: Lu et al. (2021)'s published arithmetic, NeuroSim's VGG-8 utilisation,
Horowitz (2014)'s table, hand-worked formulas, Ohm's law and Tellegen's theorem."""

import math

import pytest
import torch
from pydantic import ValidationError

from inmaterio.circuits.examples import diode_network
from inmaterio.circuits.netlist import Circuit
from inmaterio.circuits.solve import solve_dc
from inmaterio.costs.circuits import (
    SettlingAssumption,
    delivered_power_w,
    ep_circuit_cost,
    power_by_part_w,
    settling_time_s,
)
from inmaterio.costs.digital import HOROWITZ_45NM, digital_cost
from inmaterio.costs.dnpu import DnpuAssumption, dnpu_evaluation_cost, surrogate_ops
from inmaterio.costs.mapping import (
    VGG8_CIFAR10,
    ArrayGeometry,
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
    MacroConfig,
    array_read_energy_j,
    macro_cost,
    ops_per_mvm,
    post_layout_factor,
)
from inmaterio.costs.report import CostLine, tops_per_w, total_line
from inmaterio.errors import ConfigError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ NeuroSim macro, Lu et al. (2021)
def test_level_shifter_area_is_lu2021s_256_x_28_x_3_x_alpha():
    lu = macro_cost(MACRO_PRESETS["lu2021_rram40"]).module("level_shifter").area_um2
    raw = macro_cost(MACRO_PRESETS["lu2021_rram40"].model_copy(update={"calibration": UNCALIBRATED})).module("level_shifter")
    assert round(lu) == 30_966  # the paper's 256 * 28 * 3 * 1.44 um^2
    assert raw.area_um2 == pytest.approx(256 * 28 * 3)
    assert lu / raw.area_um2 == pytest.approx(1.44)


def test_macro_efficiency_from_the_published_energy():
    """3,150.8 pJ for one 128x128 MVM counted as 128*128*2 operations is the paper's 10.4 TOPS/W."""
    assert ops_per_mvm(128, 128) == 128 * 128 * 2
    assert round(tops_per_w(ops_per_mvm(128, 128), 3150.8e-12), 1) == 10.4


def test_eta_is_the_papers_post_layout_ratio():
    assert round(post_layout_factor(3864.2, 3177.75), 2) == LU2021.eta == 1.22
    with pytest.raises(ConfigError, match="pre_layout_energy must be a finite number > 0, got 0"):
        post_layout_factor(1.0, 0)


def test_calibration_factors_are_lu2021s():
    assert (LU2021.alpha, LU2021.beta, LU2021.gamma, LU2021.delta, LU2021.epsilon, LU2021.zeta, LU2021.eta) == (
        1.44, 1.4, 0.5, 0.15, 0.05, 0.11, 1.22,
    )  # fmt: skip


def test_module_energies_follow_the_cv2_formulas_and_activities():
    c = MacroConfig(rows=64, cols=32, input_bits=4, cols_per_adc=4, cell_bits=2, adc=AdcConfig(kind="flash", bits=3))
    cost, raw = macro_cost(c), macro_cost(c.model_copy(update={"calibration": UNCALIBRATED}))
    v2 = c.supply_v**2
    conv = c.input_bits * c.cols
    w = c.adc.bits + c.input_bits
    shift_add = conv * w * (0.5 * c.dff_capacitance_f + 0.15 * c.adder_capacitance_f) * v2
    assert cost.module("shift_add").energy_j == pytest.approx(shift_add)
    assert raw.module("shift_add").energy_j == pytest.approx(conv * w * (c.dff_capacitance_f + c.adder_capacitance_f) * v2)
    acc = c.cols * (w + c.cell_bits) * (0.5 * c.dff_capacitance_f + 0.15 * c.adder_capacitance_f) * v2
    assert cost.module("accumulator").energy_j == pytest.approx(acc)
    assert cost.module("control").energy_j == pytest.approx(0.05 * raw.module("control").energy_j)
    assert cost.module("mux").energy_j == pytest.approx(0.11 * raw.module("mux").energy_j)
    assert cost.module("adc").energy_j == pytest.approx(conv * (2**3 - 1) * c.adc.comparator_energy_j)
    for name in ("array", "level_shifter", "adc"):  # analog: no switching activity
        assert cost.module(name).energy_j == raw.module(name).energy_j
    assert cost.energy_j == pytest.approx(1.22 * sum(m.energy_j for m in cost.modules))
    assert raw.energy_j == pytest.approx(sum(m.energy_j for m in raw.modules))


def test_clock_is_the_sensing_cycle_stretched_by_beta():
    sar = MacroConfig(cols_per_adc=8, input_bits=8, adc=AdcConfig(kind="sar", bits=5, comparator_delay_s=1e-9))
    cost = macro_cost(sar)
    assert cost.clock_s == pytest.approx(1.4 * (10e-9 + 5e-9))
    assert cost.latency_s == pytest.approx(8 * 8 * cost.clock_s)
    flash = macro_cost(sar.model_copy(update={"adc": AdcConfig(kind="flash", bits=5), "calibration": UNCALIBRATED}))
    assert flash.clock_s == pytest.approx(10e-9 + 1e-9)
    assert AdcConfig(kind="sar", bits=6, walden_fom_j=2e-15).energy_per_conversion_j() == pytest.approx(2e-15 * 64)


def test_array_read_energy_is_ohms_law_per_bit_plane():
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(16, 8, generator=gen, dtype=torch.float64) * 1e-4
    bits = (torch.rand(3, 4, 16, generator=gen) < 0.5).to(torch.float64)  # (batch, n_bits, rows)
    v, t = 0.2, 1e-8
    e = array_read_energy_j(g, bits, v, t)
    currents = (bits * v) @ g  # (batch, n_bits, cols): column currents, A
    assert e == pytest.approx((currents * v * t).sum((1, 2)), rel=1e-12)
    cfg = MacroConfig(rows=16, cols=8, input_bits=4, input_activity=1.0)
    assert macro_cost(cfg, g).module("array").energy_j == pytest.approx(4 * float(g.sum()) * v**2 * t)


def test_macro_refuses_bad_sizes_naming_them():
    with pytest.raises(ValidationError, match="cols_per_adc = 3 must divide cols = 128"):
        MacroConfig(cols_per_adc=3)
    with pytest.raises(ConfigError, match=r"conductances_s must be \(128, 128\), got shape \(4, 4\)"):
        macro_cost(MacroConfig(), torch.ones(4, 4))
    with pytest.raises(ValidationError, match="gamma"):
        MacroConfig(calibration={"gamma": 1.5})


# ------------------------------------------------------------------ mapping
def test_vgg8_utilisation_is_neurosims():
    assert neurosim_utilisation(VGG8_CIFAR10, ArrayGeometry(weight_bits=8, cell_bits=4))[0] == pytest.approx(0.9347, abs=5e-5)
    assert neurosim_utilisation(VGG8_CIFAR10, ArrayGeometry(weight_bits=8, cell_bits=1))[0] == pytest.approx(0.9873, abs=5e-5)


def test_plain_tiling_by_hand():
    geometry = ArrayGeometry(weight_bits=8, cell_bits=4)
    m = map_layer(LayerShape(inputs=300, outputs=200), geometry)
    assert (m.rows, m.cols, m.row_blocks, m.col_blocks) == (300, 400, 3, 4)
    assert m.utilisation == pytest.approx(300 * 400 / (12 * 128 * 128))
    conv = map_layer(LayerShape(kind="conv", inputs=16, outputs=32, kernel=3, positions=64), geometry)
    assert (conv.rows, conv.cols, conv.subarrays) == (144, 64, 2)  # im2col: 3*3*16 rows, 32 filters x 2 slices
    assert conv.layer.macs == 144 * 32 * 64
    _, total = map_network([LayerShape(inputs=128, outputs=64)], geometry)
    assert total == 1.0


def test_cells_per_weight():
    assert cells_per_weight(ArrayGeometry(weight_bits=8, cell_bits=3)) == 3
    assert cells_per_weight(ArrayGeometry(weight_bits=8, cell_bits=3, differential=True)) == 6
    assert cells_per_weight(ArrayGeometry(cell_bits=None, differential=True)) == 2
    with pytest.raises(ValidationError, match="a dense layer has kernel 1, got kernel 3"):
        LayerShape(inputs=3, outputs=2, kernel=3)


# ------------------------------------------------------------------ digital baseline
def test_horowitz_table():
    e = HOROWITZ_45NM
    assert (e.add_pj["int8"], e.add_pj["int32"], e.add_pj["fp16"], e.add_pj["fp32"]) == (0.03, 0.1, 0.4, 0.9)
    assert (e.mult_pj["int8"], e.mult_pj["int32"], e.mult_pj["fp16"], e.mult_pj["fp32"]) == (0.2, 3.1, 1.1, 3.7)
    assert e.sram_pj == {8192: 10.0, 32768: 20.0, 1048576: 100.0}


def test_digital_cost_by_hand():
    d = digital_cost([LayerShape(inputs=8, outputs=8)], "int8")
    assert d.macs == 64 and d.memory == "sram_8KB"
    assert d.compute_j == pytest.approx(64 * (0.2 + 0.03) * 1e-12)
    assert d.memory_j == pytest.approx((64 * 8 / 64 + 16 * 8 / 64) * 10e-12)  # weights + activations, 64-bit words
    big = digital_cost([LayerShape(inputs=2048, outputs=1024)], "fp32")  # 8 MB of weights: DRAM
    assert big.memory == "dram"
    with pytest.raises(ConfigError, match="no published multiply energy for precision 'int16'"):
        digital_cost([LayerShape(inputs=2, outputs=2)], "int16")


# ------------------------------------------------------------------ EP circuits
def test_tellegen_dissipated_equals_delivered_free_and_nudged():
    model = diode_network(4, 10, 3, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 2 - 1
    for currents in (None, torch.randn(6, 6, generator=gen, dtype=torch.float64) * 1e-5):
        sol = model.solve(x, currents)
        delivered = delivered_power_w(model.circuit(x, currents), sol)
        assert model.power_w(sol) == pytest.approx(delivered, rel=1e-8, abs=1e-15)
        parts = power_by_part_w(model, sol)
        assert set(parts) == {"h.conductance_s", "y.conductance_s", "diodes"}
        assert sum(parts.values()) == pytest.approx(delivered, rel=1e-8, abs=1e-15)


def test_divider_power_and_settling_by_hand():
    g1, g2, c = 1e-3, 3e-3, 2e-12
    circuit = Circuit(node_names=("in", "mid"), resistor_nodes=torch.tensor([[0, 1], [1, -1]]),
                      conductance_s=torch.tensor([g1, g2], dtype=torch.float64), source_nodes=torch.tensor([0]),
                      source_v=torch.tensor([2.0], dtype=torch.float64))  # fmt: skip
    p = delivered_power_w(circuit, solve_dc(circuit))
    assert float(p[0]) == pytest.approx(2.0**2 * g1 * g2 / (g1 + g2), rel=1e-9)
    settling = SettlingAssumption(node_capacitance_f=c, time_constants=5.0)
    assert settling_time_s(circuit, settling) == pytest.approx(5.0 * c / (g1 + g2))


def test_ep_energy_is_power_times_settling_per_phase():
    model = diode_network(2, 6, 2, seed=0)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    cost = ep_circuit_cost(model, x)
    assert cost.delivered_w == pytest.approx(cost.power_w, rel=1e-8)
    assert cost.inference_j == pytest.approx(cost.power_w * cost.settling_s)
    assert cost.phases == 3 and cost.training_step_j == pytest.approx(3 * cost.inference_j)
    one_sided = ep_circuit_cost(model, x, variant="positive", nudge_currents_a=torch.full((4, 4), 1e-5, dtype=torch.float64))
    nudged_p = float(model.power_w(model.solve(x, torch.full((4, 4), 1e-5, dtype=torch.float64))).mean())
    assert one_sided.phases == 2
    assert one_sided.training_step_j == pytest.approx((cost.power_w + nudged_p) * cost.settling_s)
    with pytest.raises(ConfigError, match="variant must be"):
        ep_circuit_cost(model, x, variant="both")


# ------------------------------------------------------------------ DNPU
def test_dnpu_energy_readout_estimate_and_exact():
    v = torch.tensor([[0.5, -1.0, 0.2]])
    a = DnpuAssumption(evaluation_time_s=1e-8, dac_energy_j=1e-12, readout_energy_j=3e-12)
    cost = dnpu_evaluation_cost(v, torch.tensor([10.0]), input_electrodes=2, ops=100, assumption=a)
    assert cost.device_power_w == pytest.approx(10e-9 * 1.0)
    assert cost.energy_j == pytest.approx(10e-9 * 1e-8 + 2e-12 + 3e-12)
    assert cost.tops_per_w == pytest.approx(100 / cost.energy_j / 1e12)
    exact = dnpu_evaluation_cost(v, torch.tensor([10.0]), input_electrodes=2, ops=100, assumption=a,
                                 electrode_currents_na=torch.tensor([[4.0, -2.0, 5.0]]))  # fmt: skip
    assert exact.device_power_w == pytest.approx((0.5 * 4 + 1.0 * 2 + 0.2 * 5) * 1e-9)
    with pytest.raises(VoltageError, match=r"current_na must be \(batch=1,\)"):
        dnpu_evaluation_cost(v, torch.tensor([1.0, 2.0]), input_electrodes=2, ops=1)


def test_surrogate_ops_counts_two_per_weight():
    mlp = torch.nn.Sequential(torch.nn.Linear(7, 90), torch.nn.ReLU(), torch.nn.Linear(90, 90), torch.nn.Linear(90, 1))
    assert surrogate_ops(mlp) == 2 * (7 * 90 + 90 * 90 + 90)


# ------------------------------------------------------------------ report arithmetic
def test_total_and_rates():
    lines = [CostLine("a", "x", 2e-12, 1e-6, 0.5, 1000), CostLine("b", "x", 3e-12, 2e-6, None, 4000)]
    total = total_line(lines)
    assert (total.energy_j, total.latency_s) == pytest.approx((5e-12, 3e-6))
    assert (total.area_mm2, total.ops) == (None, 5000)
    assert total.tops_per_w == pytest.approx(5000 / 5e-12 / 1e12)
    assert lines[0].tops_per_mm2 == pytest.approx(1000 / 1e-6 / 0.5 / 1e12)
    assert math.isclose(tops_per_w(32768, 3150.8e-12), 10.3999, rel_tol=1e-4)
