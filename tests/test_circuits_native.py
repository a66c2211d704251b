"""The native DC solver against independent truths: circuits solved by hand, Lambert W, Kirchhoff's law; bad input.

ngspice parity lives in ``test_circuits_ngspice.py``; nothing here needs ngspice.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.special import lambertw

from inmaterio.circuits.elements import PiecewiseLinearDiode, ShockleyDiode
from inmaterio.circuits.netlist import GROUND, Circuit, DiodeGroup
from inmaterio.circuits.random import random_circuit
from inmaterio.circuits.solve.native import SolverOptions, kcl_currents, solve_dc
from inmaterio.errors import ConfigError, SimulationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

G = GROUND


# ------------------------------------------------------------------------------- circuits by hand
def test_resistor_divider():
    g1, g2, vs = 2e-4, 5e-5, 1.7
    c = Circuit(("in", "mid"), resistor_nodes=[[0, 1], [1, G]], conductance_s=[g1, g2], source_nodes=[0], source_v=[vs])
    sol = solve_dc(c)
    assert sol.voltages_v[0, 1].item() == pytest.approx(vs * g1 / (g1 + g2), rel=1e-13)
    assert sol.voltages_v[0, 0].item() == vs
    assert sol.source_current_a[0, 0].item() == pytest.approx(vs * g1 * g2 / (g1 + g2), rel=1e-12)


@pytest.mark.parametrize("balanced", [False, True])
def test_wheatstone_bridge(balanced):
    """Top node a at Va; R1 a-b, R2 a-c, R3 b-ground, R4 c-ground, R5 b-c (the bridge); Cramer's rule by hand."""
    va = 3.0
    g1, g2, g3, g4, g5 = 1e-3, 2e-4, 5e-4, (1e-4 if balanced else 7e-5), 3e-5
    c = Circuit(
        ("a", "b", "c"),
        resistor_nodes=[[0, 1], [0, 2], [1, G], [2, G], [1, 2]],
        conductance_s=[g1, g2, g3, g4, g5],
        source_nodes=[0],
        source_v=[va],
    )
    # (g1+g3+g5) Vb - g5 Vc = g1 Va ;  -g5 Vb + (g2+g4+g5) Vc = g2 Va
    a11, a12, a21, a22 = g1 + g3 + g5, -g5, -g5, g2 + g4 + g5
    det = a11 * a22 - a12 * a21
    vb = (g1 * va * a22 - a12 * g2 * va) / det
    vc = (a11 * g2 * va - g1 * va * a21) / det
    sol = solve_dc(c)
    assert sol.voltages_v[0, 1].item() == pytest.approx(vb, rel=1e-12)
    assert sol.voltages_v[0, 2].item() == pytest.approx(vc, rel=1e-12)
    if balanced:  # g1/g3 == g2/g4: no current through the bridge whatever g5
        assert abs(sol.voltages_v[0, 1] - sol.voltages_v[0, 2]).item() < 1e-14
    delivered = g1 * (va - vb) + g2 * (va - vc)
    assert sol.source_current_a[0, 0].item() == pytest.approx(delivered, rel=1e-12)


def _source_resistor_diode(diode, g: float, vs, bias: float = 0.0, names=("in", "x")) -> Circuit:
    """Source ``vs`` V (a number, or ``[[v], ...]`` per sample) - conductance ``g`` S - node 1 - ``diode`` (series ``bias`` V) - ground."""
    return Circuit(
        names,
        resistor_nodes=[[0, 1]],
        conductance_s=[g],
        source_nodes=[0],
        source_v=vs if isinstance(vs, list) else [vs],
        diodes=(DiodeGroup(diode, [1], [G], [bias]),),
    )


@pytest.mark.parametrize("vs, bias", [(1.0, 0.0), (5.0, 0.2), (0.3, 0.0), (-2.0, 0.1), (0.65, -0.3)])
def test_diode_resistor_lambert_w(vs, bias):
    """Source Vs - R - diode (series bias b) - ground: I = nVT g W(Is/(nVT g) exp((Vs - b + Is/g)/nVT)) - Is."""
    g = 1e-3
    d = ShockleyDiode(saturation_current_a=1e-12, ideality=1.3, gmin_s=0.0)
    c = _source_resistor_diode(d, g, vs, bias)
    nvt, i_s, v_eff = d.nvt, d.saturation_current_a, vs - bias
    log_arg = math.log(i_s / (nvt * g)) + (v_eff + i_s / g) / nvt
    w = float(np.real(lambertw(math.exp(log_arg)))) if log_arg < 700 else _lambertw_of_exp(log_arg)
    current = nvt * g * w - i_s
    sol = solve_dc(c)
    assert sol.voltages_v[0, 1].item() == pytest.approx(vs - current / g, abs=1e-12)
    # the current through R is g (v1 - vs): it cannot be resolved finer than g times the spacing of doubles near vs
    # (4e-19 A at vs = -2 V, where the diode blocks and the current is -Is = -1e-12 A)
    assert sol.source_current_a[0, 0].item() == pytest.approx(current, rel=1e-9, abs=4 * g * math.ulp(abs(vs)))


def _lambertw_of_exp(x: float) -> float:
    """W(e^x) for large x by Newton on w + ln w = x."""
    w = x - math.log(x)
    for _ in range(50):
        w -= (w + math.log(w) - x) / (1 + 1 / w)
    return w


def test_zero_sources_give_zero_voltages():
    c = random_circuit(7, 20, batch_size=3)
    zero_diodes = tuple(dataclasses.replace(gr, bias_v=torch.zeros_like(gr.bias_v)) for gr in c.diodes)
    c = dataclasses.replace(c, source_v=torch.zeros_like(c.source_v), current_a=torch.zeros_like(c.current_a), diodes=zero_diodes)
    sol = solve_dc(c)
    assert sol.voltages_v.abs().max().item() < 1e-15
    assert sol.source_current_a.abs().max().item() < 1e-18
    assert sol.amplifier_current_a.abs().max().item() < 1e-18


def test_amplifier_chain():
    """Vs -gs- x -> amp1 (A1) -> y (load g1) -> amp2 (A2) -> z (load g2).

    z = A1 A2 x, I2 = g2 z, I1 = g1 y + I2 / A2, and amp1 draws I1 / A1 = x (g1 + g2) from x,
    so x = gs Vs / (gs + g1 + g2).
    """
    vs, gs, g1, g2, a1, a2 = 1.5, 1e-4, 3e-5, 2e-5, 2.0, 3.0
    c = Circuit(
        ("s", "x", "y", "z"),
        resistor_nodes=[[0, 1], [2, G], [3, G]],
        conductance_s=[gs, g1, g2],
        source_nodes=[0],
        source_v=[vs],
        amplifier_nodes=[[1, 2], [2, 3]],
        gain=[a1, a2],
        current_gain=[1 / a1, 1 / a2],
    )
    x = gs * vs / (gs + g1 + g2)
    sol = solve_dc(c)
    v = sol.voltages_v[0]
    assert v[1].item() == pytest.approx(x, rel=1e-12)
    assert v[2].item() == pytest.approx(a1 * x, rel=1e-12)
    assert v[3].item() == pytest.approx(a1 * a2 * x, rel=1e-12)
    i2 = g2 * a1 * a2 * x
    i1 = g1 * a1 * x + i2 / a2
    assert sol.amplifier_current_a[0].tolist() == pytest.approx([i1, i2], rel=1e-12)
    assert sol.source_current_a[0, 0].item() == pytest.approx(gs * (vs - x), rel=1e-12)


@pytest.mark.parametrize("vs", [2.0, 0.3, -1.0])
def test_piecewise_linear_clamp(vs):
    """Vs - R - x - PWL diode to ground: on above the knee, V = (g Vs + (g_on - g_off) V_on) / (g + g_on)."""
    g, d = 1e-4, PiecewiseLinearDiode(on_conductance_s=1e-2, off_conductance_s=1e-9, knee_v=0.5)
    c = _source_resistor_diode(d, g, vs)
    on = (vs * g + (d.on_conductance_s - d.off_conductance_s) * d.knee_v) / (g + d.on_conductance_s)
    off = g * vs / (g + d.off_conductance_s)
    expected = on if off > d.knee_v else off
    sol = solve_dc(c)
    assert sol.voltages_v[0, 1].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (expected > d.knee_v) == (vs == 2.0)
    assert sol.iterations[0].item() <= 5  # exact within a linear region: a few steps


# ------------------------------------------------------------------------------------------- KCL
def _largest_branch_current(c: Circuit, v: torch.Tensor) -> torch.Tensor:
    b, n = v.shape
    ve = torch.cat([v, torch.zeros(b, 1, dtype=v.dtype)], 1)
    ext = lambda i: torch.where(i == G, n, i)  # noqa: E731
    parts = [torch.zeros(b, dtype=v.dtype)]
    r = c.resistor_nodes
    parts.append((c.conductance_s * (ve[:, ext(r[:, 0])] - ve[:, ext(r[:, 1])])).abs().amax(1) if len(r) else parts[0])
    for gr in c.diodes:
        i = gr.model.current(ve[:, ext(gr.anode)] - ve[:, ext(gr.cathode)] - gr.bias_v)
        parts.append(i.abs().amax(1))
    if len(c.current_nodes):
        parts.append(c.current_a.expand(b, -1).abs().amax(1))
    return torch.stack(parts).amax(0)


@pytest.mark.parametrize("seed", range(12))
def test_kirchhoff_current_law_at_every_free_node(seed):
    n = [3, 5, 8, 12, 20, 40][seed % 6]
    kind = ["both", "shockley", "piecewise", "none"][seed % 4]
    c = random_circuit(seed, n, batch_size=4, diode_model=kind)
    sol = solve_dc(c)
    net, amp = kcl_currents(c, sol.voltages_v)
    free = torch.ones(c.n_nodes, dtype=torch.bool)
    free[c.source_nodes] = False
    free[c.amplifier_nodes[:, 1]] = False
    scale = _largest_branch_current(c, sol.voltages_v)
    residual = net[:, : c.n_nodes][:, free].abs().amax(1) if free.any() else torch.zeros(4, dtype=torch.float64)
    assert (residual <= 1e-9 * scale).all(), (residual, scale)
    # at a source, the net current leaving through the elements is what the source delivers
    assert torch.allclose(net[:, c.source_nodes], sol.source_current_a, rtol=0, atol=1e-12 * scale.max().item())
    assert torch.allclose(amp, sol.amplifier_current_a, rtol=0, atol=1e-12 * scale.max().item())


def test_random_circuit_is_deterministic():
    a, b = random_circuit(3, 17, batch_size=2), random_circuit(3, 17, batch_size=2)
    assert a.describe() == b.describe()
    assert torch.equal(a.conductance_s, b.conductance_s) and torch.equal(a.source_v, b.source_v)
    assert a.source_v.shape[0] == 2 and a.current_a.shape[0] == 2
    assert random_circuit(4, 17).describe() != a.describe() or not torch.equal(
        random_circuit(4, 17).conductance_s, a.conductance_s
    )


# ------------------------------------------------------------------------------------- bad input
def _two_nodes(**kw):
    base = dict(resistor_nodes=[[0, 1], [1, G]], conductance_s=[1e-3, 1e-3], source_nodes=[0], source_v=[1.0])
    base.update(kw)
    return Circuit(("a", "b"), **base)


def test_disconnected_node_is_named():
    with pytest.raises(ConfigError, match=r"node 1 'b' is disconnected"):
        _two_nodes(resistor_nodes=[[0, G]], conductance_s=[1e-3])


def test_floating_island_is_named():
    with pytest.raises(ConfigError, match=r"node 1 'b' floats"):
        Circuit(("a", "b", "c"), resistor_nodes=[[0, G], [1, 2]], conductance_s=[1e-3, 1e-3], source_nodes=[0], source_v=[1.0])


def test_negative_conductance_is_named():
    with pytest.raises(ConfigError, match=r"resistor 1 conductance -0.001 S is negative"):
        _two_nodes(conductance_s=[1e-3, -1e-3])


def test_two_sources_on_one_node():
    with pytest.raises(ConfigError, match=r"node 0 'a' is driven by more than one voltage source"):
        _two_nodes(source_nodes=[0, 0], source_v=[1.0, 2.0])


def test_amplifier_loop_is_named():
    with pytest.raises(ConfigError, match=r"amplifiers form a loop through amplifier 0"):
        Circuit(
            ("a", "b", "c"),
            resistor_nodes=[[0, G], [1, G], [2, G]],
            conductance_s=[1e-3] * 3,
            source_nodes=[2],
            source_v=[1.0],
            amplifier_nodes=[[0, 1], [1, 0]],
            gain=[2.0, 2.0],
            current_gain=[0.5, 0.5],
        )


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(source_v=[float("nan")]), r"source_v has a non-finite value nan at index \[0\]"),
        (dict(conductance_s=[1e-3, float("inf")]), r"conductance_s has a non-finite value inf at index \[1\]"),
    ],
)
def test_non_finite_value_is_named(kw, message):
    with pytest.raises(ConfigError, match=message):
        _two_nodes(**kw)


def test_non_convergence_names_the_sample():
    # sample 0 is trivial, sample 1 needs many limited Newton steps
    c = _source_resistor_diode(ShockleyDiode(), 1e-3, [[0.0], [5.0]], names=("a", "b"))
    with pytest.raises(SimulationError, match=r"did not converge within 2 Newton iterations for sample\(s\) \[1\]"):
        solve_dc(c, options=SolverOptions(max_iterations=2))
    assert solve_dc(c).voltages_v[1, 1].item() == pytest.approx(0.53, abs=0.05)  # the default converges


def test_compiled_small_path_agrees_with_the_torch_path(monkeypatch):
    """The numba Newton for small systems gives the torch path's voltages, iterations and chord results."""
    from inmaterio.circuits import Amplifier, Bias, Concatenate, Dense, Diodes, Input, Model, PiecewiseLinearDiode
    from inmaterio.circuits.solve import small

    x = Input(4, inverted=True, name="x")
    b = Bias([1.0, -1.0], name="b")
    h = Dense(8, name="h", init_s=(1e-6, 1e-5))(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(-0.3, -0.3), name="d")(h)
    h = Diodes(PiecewiseLinearDiode(on_conductance_s=1e-5, knee_v=0.4), orientation="forward", name="p")(h)
    y = Dense(4, name="y", init_s=(1e-6, 1e-5))(Concatenate()([Amplifier(4.0, name="a")(h), b]))
    model = Model(x, y, seed=0)
    data = torch.rand(37, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    currents = torch.randn(37, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1e-7
    results = {}
    for name, limit in (("compiled", small.MAX_UNKNOWNS), ("torch", 0)):
        monkeypatch.setattr(small, "MAX_UNKNOWNS", limit)
        free = model.solve(data)
        nudged = solve_dc(model.circuit(data, currents), initial_v=free.voltages_v, reuse=free)
        results[name] = (free, nudged)
    (f1, n1), (f2, n2) = results["compiled"], results["torch"]
    assert f1.jacobian_lu[1].dtype == torch.int64 and f2.jacobian_lu[1].dtype == torch.int32
    assert torch.allclose(f1.voltages_v, f2.voltages_v, rtol=0, atol=1e-12)
    assert torch.equal(f1.iterations, f2.iterations)
    assert torch.allclose(n1.voltages_v, n2.voltages_v, rtol=0, atol=1e-12)


def _both_paths(monkeypatch, solve):
    """``solve()`` on the compiled small-circuit path and on the torch path (the compiled one switched off)."""
    from inmaterio.circuits.solve import small

    compiled = solve()
    monkeypatch.setattr(small, "MAX_UNKNOWNS", 0)
    torch_path = solve()
    monkeypatch.undo()
    return compiled, torch_path


def test_compiled_path_without_source_currents_agrees_with_the_torch_path(monkeypatch):
    """EP's calls (no source currents; a nudged phase with chord steps on the free phase's LU) on random circuits
    with amplifiers, current sources and both diode kinds: the one-call compiled path (right-hand sides from
    precomputed maps, Newton, voltages, its own KCL check) gives the torch path's voltages and iterations, and
    its voltages satisfy Kirchhoff's current law at every free node (checked by :func:`kcl_currents`)."""
    compiled_used = 0
    for seed in range(10):
        n = [5, 8, 12, 20, 30][seed % 5]
        c = random_circuit(seed, n, batch_size=6, diode_model=["both", "shockley", "piecewise", "none"][seed % 4])
        g = torch.Generator().manual_seed(seed)
        if len(c.current_nodes):
            nudged = c.with_values(
                current_a=c.current_a + 1e-6 * torch.randn(c.current_a.shape, generator=g, dtype=torch.float64)
            )
        else:
            nudged = c.with_values(source_v=c.source_v + 1e-3 * torch.randn(c.source_v.shape, generator=g, dtype=torch.float64))

        def phases(c=c, nudged=nudged):
            free = solve_dc(c, source_currents=False)
            return free, solve_dc(nudged, initial_v=free.voltages_v, reuse=free, source_currents=False)

        (f1, n1), (f2, n2) = _both_paths(monkeypatch, phases)
        compiled_used += f1.jacobian_lu[1].dtype == torch.int64
        assert torch.allclose(f1.voltages_v, f2.voltages_v, rtol=0, atol=1e-12), seed
        assert torch.allclose(n1.voltages_v, n2.voltages_v, rtol=0, atol=1e-12), seed
        assert torch.equal(f1.iterations, f2.iterations), seed
        assert n1.jacobian_lu is None and n1.source_current_a is None
        free_nodes = torch.ones(c.n_nodes, dtype=torch.bool)
        free_nodes[c.source_nodes] = False
        free_nodes[c.amplifier_nodes[:, 1]] = False
        for circuit, sol in ((c, f1), (nudged, n1)):
            net, _ = kcl_currents(circuit, sol.voltages_v)
            scale = _largest_branch_current(circuit, sol.voltages_v)
            residual = net[:, : c.n_nodes][:, free_nodes].abs().amax(1)
            assert (residual <= 1e-9 * scale).all(), (seed, residual, scale)
            assert (sol.kcl_residual_a <= 1e-9 * scale).all(), (seed, sol.kcl_residual_a, scale)
    assert compiled_used >= 5  # most of these circuits are small enough for the compiled path


def test_compiled_path_follows_conductances_changed_in_place(monkeypatch):
    """The compiled path keeps per-topology maps built from the conductances; an in-place change must rebuild them."""
    c = random_circuit(2, 12, batch_size=4)
    before = solve_dc(c, source_currents=False)
    assert before.jacobian_lu[1].dtype == torch.int64  # the compiled path
    with torch.no_grad():
        c.conductance_s.mul_(3.0)
    after, reference = _both_paths(monkeypatch, lambda: solve_dc(c, source_currents=False))
    assert torch.allclose(after.voltages_v, reference.voltages_v, rtol=0, atol=1e-12)
    assert not torch.allclose(after.voltages_v, before.voltages_v, rtol=0, atol=1e-6)
    # an equal copy of the values (a model's circuit rebuilt with the same parameters) gives the same answer
    again = solve_dc(c.with_values(conductance_s=c.conductance_s.clone()), source_currents=False)
    assert torch.equal(again.voltages_v, after.voltages_v)


def test_compiled_path_survives_tensors_moved_to_shared_memory():
    """The compiled path keeps arrays built from the circuit's tensors; sending a circuit to another process moves
    their storage to shared memory (what ``benchmarks/ep/speed.py`` does), which must not leave it reading freed
    memory (a kept ``Tensor.numpy()`` view once made that benchmark crash)."""
    c = random_circuit(2, 12, batch_size=4)
    first = solve_dc(c, source_currents=False)
    tensors = [c.resistor_nodes, c.source_nodes, c.amplifier_nodes, c.current_nodes, c.conductance_s, c.gain, c.current_gain]
    for t in [*tensors, *(x for g in c.diodes for x in (g.anode, g.cathode, g.bias_v))]:
        t.share_memory_()
    junk = [torch.full((1000,), -1, dtype=torch.long) for _ in range(100)]  # likely to reuse the freed memory
    again = solve_dc(c, source_currents=False)
    assert torch.equal(first.voltages_v, again.voltages_v)
    assert torch.equal(first.iterations, again.iterations)
    del junk


def test_lu_with_a_diagonal_leading_block_is_the_plain_lu_bit_for_bit():
    """The compiled LU skips the zeros of a diagonal leading block (EBANA's hidden nodes); it must give the plain
    partial-pivoting factors, pivots and solutions exactly, also when a row swap inside the block ends the shortcut."""
    from inmaterio.circuits.solve import small

    rng = np.random.default_rng(0)
    swapped = 0
    for trial in range(60):
        n, m = 12, int(rng.integers(0, 12))
        a = rng.normal(size=(n, n))
        a[:m, :m] = np.diag(rng.normal(size=m) * (0.2 if trial % 2 else 20.0))  # small pivots: row swaps
        pa, pc = np.array([0, m, -1]), np.array([-1, -1, min(m, n - 1)])  # diodes to known nodes only
        assert small.diagonal_block(a, pa, pc) >= m
        lu_block, lu_plain = a.copy(), a.copy()
        piv_block, piv_plain = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        assert small._lu_factor(lu_block, piv_block, m) and small._lu_factor(lu_plain, piv_plain, 0)
        assert np.array_equal(lu_block, lu_plain) and np.array_equal(piv_block, piv_plain)
        swapped += bool((piv_plain[:m] != np.arange(m)).any())
        rhs, x_block, x_plain = rng.normal(size=n), np.zeros(n), np.zeros(n)
        small._lu_solve_into(lu_block, piv_block, rhs, x_block, m)
        small._lu_solve_into(lu_plain, piv_plain, rhs, x_plain, 0)
        assert np.array_equal(x_block, x_plain)
        assert np.allclose(a @ x_block, rhs, rtol=0, atol=1e-9)
    assert 5 <= swapped <= 55  # both cases occur
    # a diode joining two unknowns of the block makes it non-diagonal from the later one on
    j0 = np.diag(np.arange(1.0, 7.0))
    assert small.diagonal_block(j0, np.array([1]), np.array([4])) == 4
    j0[5, 2] = 1.0
    assert small.diagonal_block(j0, np.array([-1]), np.array([-1])) == 5
