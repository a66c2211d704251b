"""Parity of the native DC solver with ngspice (an independent simulator) on random circuits, and the ngspice back end.

The tests that run ngspice skip when it is missing, unless ``INMATERIO_REQUIRE_NGSPICE=1`` (CI sets it), when
they fail instead. Tolerances: node voltages agree to ``max(1e-6 |V|, 1e-6 V)`` (the issue's criterion; measured
worst case over these circuits ~1e-7 V); source and amplifier currents to ``1e-6`` of the largest such current
of the sample plus 1e-15 A.
"""

import math
import os
import re

import pytest
import torch

from inmaterio.circuits.elements import PiecewiseLinearDiode, ShockleyDiode, thermal_voltage
from inmaterio.circuits.netlist import GROUND, Circuit, DiodeGroup
from inmaterio.circuits.random import random_circuit
from inmaterio.circuits.solve import ngspice as ng
from inmaterio.circuits.solve.native import solve_dc
from inmaterio.errors import ConfigError, SimulationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

G = GROUND
_REQUIRED = os.environ.get("INMATERIO_REQUIRE_NGSPICE") == "1"


def _need(mode: str) -> None:
    if ng.ngspice_available(mode):
        return
    what = "libngspice (apt-get install libngspice0)" if mode == "shared" else "the ngspice executable (apt-get install ngspice)"
    if _REQUIRED:
        pytest.fail(f"INMATERIO_REQUIRE_NGSPICE=1 but {what} is missing")
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def shared():
    _need("shared")


@pytest.fixture
def batch():
    _need("batch")


def _assert_parity(c: Circuit, native, spice) -> None:
    dv = (native.voltages_v - spice.voltages_v).abs()
    allowed = torch.clamp(1e-6 * native.voltages_v.abs(), min=1e-6)
    assert (dv <= allowed).all(), f"{c.describe()}: |dV| up to {dv.max().item():.3g} V"
    for a, b in ((native.source_current_a, spice.source_current_a), (native.amplifier_current_a, spice.amplifier_current_a)):
        if a.numel():
            scale = a.abs().amax(1, keepdim=True)
            assert ((a - b).abs() <= 1e-6 * scale + 1e-15).all(), f"{c.describe()}: currents {a} vs {b}"


_SIZES = [3, 4, 5, 6, 7, 9, 11, 14, 17, 21, 26, 33, 40]
_KINDS = ["both", "shockley", "piecewise", "none"]


def _case(seed: int, batch_size: int = 2) -> Circuit:
    return random_circuit(
        seed,
        _SIZES[seed % len(_SIZES)],
        batch_size=batch_size,
        diode_model=_KINDS[seed % 4],
        with_amplifiers=seed % 3 != 0,
        with_current_sources=seed % 5 != 0,
    )


@pytest.mark.usefixtures("shared")
@pytest.mark.parametrize("seed", range(40))
def test_parity_shared_library(seed):
    c = _case(seed, batch_size=3)
    _assert_parity(c, solve_dc(c), ng.solve_ngspice(c, mode="shared"))


@pytest.mark.usefixtures("shared")
@pytest.mark.parametrize("seed", [40, 41, 42, 43])
def test_parity_reload_mode(seed):
    c = _case(seed)
    _assert_parity(c, solve_dc(c), ng.solve_ngspice(c, mode="reload"))


@pytest.mark.usefixtures("batch")
@pytest.mark.parametrize("seed", [50, 51, 52, 53, 54])
def test_parity_batch_mode(seed):
    c = _case(seed)
    _assert_parity(c, solve_dc(c), ng.solve_ngspice(c, mode="batch"))


@pytest.mark.usefixtures("shared")
def test_per_circuit_gains_conductances_and_zero_conductance_are_altered():
    """Shared mode alters resistors (including one open in some samples), gains and current gains per sample."""
    base = random_circuit(5, 14, batch_size=3, diode_model="both")
    b = 3
    g = base.conductance_s.expand(b, -1).clone()
    g[1, 0] = 0.0  # open in sample 1 only
    g[2] *= 1.7
    gain = torch.stack([base.gain, base.gain * 0.8, base.gain * 1.1])
    c = base.with_values(conductance_s=g, gain=gain, current_gain=1.0 / gain)
    native = solve_dc(c)
    for mode in ("shared", "reload"):
        _assert_parity(c, native, ng.solve_ngspice(c, mode=mode))


# ---------------------------------------------------------------------------------- circuits without resistors
@pytest.mark.usefixtures("shared")
def test_circuit_without_resistors_matches_ngspice():
    """0.5 V source, diode, middle node, diode to ground: no resistor at all (once a TypeError in solve_dc).

    Two equal diodes carry the same current, so by symmetry each drops half the source: 0.25 V at the middle
    node (ngspice: 0.25 V); with a PWL diode the middle node must sit where the two I-V laws meet, which we
    solve by hand (bisection).
    """
    d = ShockleyDiode()
    c = Circuit(("in", "mid"), source_nodes=[0], source_v=[[0.5], [1.2]], diodes=(DiodeGroup(d, [0, 1], [1, G], [0.0, 0.0]),))
    native = solve_dc(c)
    assert native.voltages_v[:, 1].tolist() == pytest.approx([0.25, 0.6], abs=1e-12)
    _assert_parity(c, native, ng.solve_ngspice(c, mode="shared"))

    pwl = PiecewiseLinearDiode(on_conductance_s=1e-3, off_conductance_s=1e-9, knee_v=0.3)
    mixed = Circuit(("in", "mid"), source_nodes=[0], source_v=[1.0],
                    diodes=(DiodeGroup(d, [0], [1], [0.0]), DiodeGroup(pwl, [1], [G], [0.0])))  # fmt: skip
    lo, hi = 0.0, 1.0
    for _ in range(200):  # the middle voltage where i_shockley(1 - v) = i_pwl(v)
        mid = (lo + hi) / 2
        excess = d.current(torch.tensor(1.0 - mid, dtype=torch.float64)) - pwl.current(torch.tensor(mid, dtype=torch.float64))
        lo, hi = (mid, hi) if excess > 0 else (lo, mid)
    native = solve_dc(mixed)
    assert native.voltages_v[0, 1].item() == pytest.approx(mid, abs=1e-9)
    _assert_parity(mixed, native, ng.solve_ngspice(mixed, mode="shared"))


@pytest.mark.usefixtures("shared")
def test_circuit_without_free_nodes_matches_ngspice():
    """Every node fixed (a source and an amplifier output, each with a diode to ground): only the currents to solve."""
    d = ShockleyDiode()
    c = Circuit(("in", "out"), source_nodes=[0], source_v=[0.3], amplifier_nodes=[[0, 1]], gain=[2.0], current_gain=[0.5],
                diodes=(DiodeGroup(d, [0, 1], [G, G], [0.0, 0.0]),))  # fmt: skip
    native = solve_dc(c)
    assert native.voltages_v.tolist() == [[0.3, 0.6]]
    i_out = d.current(torch.tensor(0.6, dtype=torch.float64)).item()
    assert native.amplifier_current_a.item() == pytest.approx(i_out, rel=1e-12)
    # the source feeds its own diode and the amplifier's input draw, current_gain x the output current
    assert native.source_current_a.item() == pytest.approx(
        d.current(torch.tensor(0.3, dtype=torch.float64)).item() + 0.5 * i_out, rel=1e-12
    )
    _assert_parity(c, native, ng.solve_ngspice(c, mode="shared"))


# ---------------------------------------------------------------------------------- diode physics
@pytest.mark.usefixtures("shared")
@pytest.mark.parametrize("temperature_k", [300.15, 250.0, 350.0])
def test_thermal_voltage_matches_ngspice(temperature_k):
    """A current forced through a diode: V = nVT ln(I/Is + 1), tight enough to see CODATA 2014 vs 2018 (1.4e-7)."""
    d = ShockleyDiode(saturation_current_a=1e-14, ideality=1.2, temperature_k=temperature_k, gmin_s=0.0)
    c = Circuit(
        ("x",),
        diodes=(DiodeGroup(d, [0], [G], [0.0]),),
        current_nodes=[0],
        current_a=[1e-3],
        resistor_nodes=[[0, G]],
        conductance_s=[0.0],
    )
    expected = d.ideality * thermal_voltage(temperature_k) * math.log1p(1e-3 / 1e-14)
    v_ng = ng.solve_ngspice(c).voltages_v[0, 0].item()
    v_native = solve_dc(c).voltages_v[0, 0].item()
    assert v_native == pytest.approx(expected, abs=1e-12)
    assert v_ng == pytest.approx(expected, abs=1e-11)


@pytest.mark.usefixtures("shared")
def test_diode_gmin_and_reverse_bias_match():
    """A reverse-biased diode with a large gmin_s in parallel with a weak resistor: ngspice's gmin + extra resistor."""
    strong = ShockleyDiode(gmin_s=1e-9)
    weak = ShockleyDiode(gmin_s=1e-12)
    c = Circuit(
        ("in", "x", "y"),
        resistor_nodes=[[0, 1], [0, 2]],
        conductance_s=[1e-8, 1e-8],
        source_nodes=[0],
        source_v=[[-1.0], [-2.0]],
        diodes=(DiodeGroup(strong, [1], [G], [0.0]), DiodeGroup(weak, [2], [G], [0.0])),
    )
    native, spice = solve_dc(c), ng.solve_ngspice(c)
    # x sits on a divider 1e-8 : 1e-9 (gmin_s) in parallel with the saturation current (without the extra
    # resistor beside ngspice's gmin = 1e-12 it would sit near -1 V)
    assert native.voltages_v[0, 1].item() == pytest.approx(-1.0 * 1e-8 / (1e-8 + 1e-9), rel=1e-3)
    # the rest is ngspice's own reverse-bias law below -3 nVT (Is (3 nVT / (e v))^3 ~ 2e-17 A at -1 V, over 1e-8 S)
    assert (native.voltages_v - spice.voltages_v).abs().max().item() < 1e-8


@pytest.mark.usefixtures("shared")
def test_piecewise_linear_diode_in_ngspice():
    d = PiecewiseLinearDiode(on_conductance_s=1e-2, off_conductance_s=1e-9, knee_v=0.5)
    c = Circuit(
        ("in", "x"),
        resistor_nodes=[[0, 1]],
        conductance_s=[1e-4],
        source_nodes=[0],
        source_v=[[2.0], [0.3]],
        diodes=(DiodeGroup(d, [1], [G], [0.1]),),
    )
    _assert_parity(c, solve_dc(c), ng.solve_ngspice(c))


# ------------------------------------------------------------------------------------- the deck
def test_netlist_names_and_elements():
    c = Circuit(
        ("In 0", "x/y", "X/Y", "gnd"),
        resistor_nodes=[[0, 1], [1, 2], [2, G], [3, G], [1, 3]],
        conductance_s=[1e-3, 0.0, 2e-4, 1e-4, 1e-5],
        source_nodes=[0],
        source_v=[1.0],
        diodes=(DiodeGroup(ShockleyDiode(), [1], [2], [0.25]),),
        current_nodes=[2],
        current_a=[1e-6],
    )
    deck = ng.to_netlist(c, title="names")
    names = ng.spice_node_names(c)
    assert names == ["n0_in_0", "n1_x_y", "n2_x_y", "n3_gnd"]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    lines = deck.splitlines()
    assert lines[0] == "names" and lines[-2:] == [".op", ".end"]
    assert "r0 n0_in_0 n1_x_y 1000.0" in lines
    assert not any(line.startswith("r1 ") for line in lines)  # g = 0: left out
    assert "r2 n2_x_y 0 5000.0" in lines
    assert "vs0 n0_in_0 0 dc 1.0" in lines
    assert "vb_g0k0 n1_x_y x_g0k0 dc 0.25" in lines and "Dg0k0 x_g0k0 n2_x_y dmod_g0k0" in lines
    assert "is0 0 n2_x_y dc 1e-06" in lines
    options = next(line for line in lines if line.startswith(".options"))
    temp = float(re.search(r"temp=([-0-9.e]+)", options).group(1))
    # ngspice's V_T at the deck's temperature equals ours at 300.15 K
    assert ng.NGSPICE_K_OVER_Q * (temp + 273.15) == pytest.approx(thermal_voltage(300.15), rel=1e-15)
    assert "gmin=1e-12" in options
    with pytest.raises(ConfigError, match="sample 3 outside"):
        ng.to_netlist(c, 3)


def test_amplifier_lines():
    c = Circuit(
        ("s", "x", "y"),
        resistor_nodes=[[0, 1], [2, G]],
        conductance_s=[1e-4, 1e-5],
        source_nodes=[0],
        source_v=[1.0],
        amplifier_nodes=[[1, 2]],
        gain=[4.0],
        current_gain=[0.25],
    )
    lines = ng.to_netlist(c).splitlines()
    assert "e0 ea0 0 n1_x 0 4.0" in lines
    assert "vamp0 ea0 n2_y dc 0" in lines
    assert "f0 n1_x 0 vamp0 0.25" in lines


# ------------------------------------------------------------------------------------- errors
def test_missing_ngspice_says_how_to_install(monkeypatch):
    monkeypatch.setattr(ng, "_find_library", lambda: None)
    monkeypatch.setattr(ng, "_find_executable", lambda: None)
    assert not ng.ngspice_available()
    c = random_circuit(0, 4)
    for mode in ("shared", "reload", "batch"):
        with pytest.raises(SimulationError, match=r"ngspice not found: install it with `apt-get install ngspice libngspice0`"):
            ng.solve_ngspice(c, mode=mode)


def test_unknown_mode():
    with pytest.raises(ConfigError, match="mode must be"):
        ng.solve_ngspice(random_circuit(0, 4), mode="spectre")


@pytest.mark.usefixtures("shared")
def test_ngspice_error_names_the_sample_and_the_instance_recovers(monkeypatch):
    c = random_circuit(2, 8, batch_size=3)
    real = ng._alter_commands

    def broken(circuit, sample, previous, kept):
        return real(circuit, sample, previous, kept) + (["alter nosuchelement = 1"] if sample == 2 else [])

    monkeypatch.setattr(ng, "_alter_commands", broken)
    with pytest.raises(SimulationError, match=r"sample 2: ngspice command 'alter nosuchelement = 1' failed"):
        ng.solve_ngspice(c)
    monkeypatch.undo()
    _assert_parity(c, solve_dc(c), ng.solve_ngspice(c))
    assert ng.NgspiceShared.get() is ng.NgspiceShared.get()


@pytest.mark.usefixtures("shared")
def test_bad_deck_raises():
    with pytest.raises(SimulationError, match="could not load the circuit"):
        ng.NgspiceShared.get().load("title\nr1 a 0 1k\nq1 a b\n.end")


def test_required_ngspice_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setattr(ng, "ngspice_available", lambda mode="any": False)
    monkeypatch.setattr(f"{__name__}._REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="INMATERIO_REQUIRE_NGSPICE=1 but libngspice"):
        _need("shared")
    monkeypatch.setattr(f"{__name__}._REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _need("batch")


@pytest.mark.parametrize("mode", ["shared", "batch"])
def test_inexact_ngspice_fallback_is_an_error_naming_the_sample(monkeypatch, mode):
    """With a reltol ngspice cannot meet it ends in its shunted transient op: an error, not a silently wrong answer."""
    _need(mode)
    monkeypatch.setattr(ng, "OPTIONS", "reltol=1e-10 abstol=1e-18 vntol=1e-13")
    c = random_circuit(24, 21, batch_size=3, diode_model="both", with_amplifiers=False)
    with pytest.raises(SimulationError, match=r"no DC operating point for sample 1\b.*transient-op fallback"):
        ng.solve_ngspice(c, mode=mode)


def test_ngspice_leaves_torch_thread_count_alone(shared):
    """libngspice's OpenMP start-up must not change the thread count torch uses."""
    torch.set_num_threads(1)
    circuit = Circuit(("a", "b"), resistor_nodes=[[0, 1], [1, G]], conductance_s=[1e-3, 1e-3], source_nodes=[0], source_v=[1.0])
    ng.solve_ngspice(circuit, mode="shared")
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------------------------- result sets
@pytest.mark.usefixtures("shared")
def test_result_sets_are_destroyed_after_every_operating_point(monkeypatch):
    """ngspice holds at most the plot just computed (plus ``const``) while a batch runs, none after it.

    The plots are counted by ngspice itself (``ngSpice_AllPlots``) right after each ``op``; with
    ``destroy_every=k`` (the old behaviour kept them, which slows ngspice) at most ``k`` pile up.
    """
    shared = ng.NgspiceShared.get()
    counts: list[int] = []
    real = ng.NgspiceShared._operating_point

    def counting(self, sample):
        values = real(self, sample)
        counts.append(len(self.plots()))
        return values

    monkeypatch.setattr(ng.NgspiceShared, "_operating_point", counting)
    c = random_circuit(3, 9, batch_size=12, diode_model="both")
    ng.solve_ngspice(c)
    assert counts == [2] * 12  # the op just read, and const
    assert shared.plots() == ["const"]
    counts.clear()
    shared.solve(c, destroy_every=5)
    assert counts == [2, 3, 4, 5, 6] * 2 + [2, 3]
    assert shared.plots() == ["const"]
    with pytest.raises(ConfigError, match="destroy_every must be at least 1"):
        shared.solve(c, destroy_every=0)


@pytest.mark.usefixtures("shared")
def test_repeated_solves_and_drivers_give_identical_results():
    """The same batch solved again, with kept result sets, or reloaded per sample: bit-identical answers.

    Two different circuits in turn check that the vector positions read from ngspice's data callback follow
    the circuit loaded (a stale position would read another node's voltage).
    """
    c = _case(32, batch_size=6)  # 11 nodes, Shockley and PWL diodes, amplifiers, current sources
    other = _case(10, batch_size=4)  # 26 nodes
    first = ng.solve_ngspice(c)
    for spice in (
        ng.solve_ngspice(c),
        ng.NgspiceShared.get().solve(c, destroy_every=4),
        ng.NgspiceShared.get().solve(c, destroy_every=100),
    ):
        for field in ("voltages_v", "source_current_a", "amplifier_current_a"):
            assert torch.equal(getattr(spice, field), getattr(first, field)), field
    _assert_parity(other, solve_dc(other), ng.solve_ngspice(other))
    again = ng.solve_ngspice(c)
    assert torch.equal(again.voltages_v, first.voltages_v)
    reloaded = ng.solve_ngspice(c, mode="reload")  # a fresh deck per sample: the same operating points to rounding
    assert (reloaded.voltages_v - first.voltages_v).abs().max().item() < 1e-12
    _assert_parity(c, solve_dc(c), first)
