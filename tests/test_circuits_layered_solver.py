"""The layered block-coordinate-descent solver against independent truths.

Truths: the KKT conditions of the box-constrained co-content minimum, computed
here from the full nodal (Laplacian) system; the direct linear solve of the
nodal equations when there are no diodes; the project's Newton solver
(:func:`~inmaterio.circuits.solve.native.solve_dc`) on the same circuit with
steep piecewise-linear diodes, built both as a netlist and with the layer API;
the co-content written out term by term.
"""

import math

import pytest
import torch

from inmaterio.circuits import Concatenate, Dense, Diodes, Input, Model, PiecewiseLinearDiode, SolverOptions
from inmaterio.circuits.netlist import GROUND, Circuit, DiodeGroup
from inmaterio.circuits.solve.layered import (
    LayeredNetwork,
    diode_boxes,
    kkt_residuals,
    layered_energy_w,
    solve_layered,
)
from inmaterio.circuits.solve.native import solve_dc
from inmaterio.circuits.solve.ngspice import ngspice_available, solve_ngspice
from inmaterio.errors import ConfigError, SimulationError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def random_network(seed: int, sizes: list[int], kind: str, *, lower_v=-0.05, upper_v=0.05, bias_a=0.2):
    """Conductances uniform in [0.1, 1] S, biases N(0, bias_a) A, boxes of ``kind`` on the hidden layers (none on the output)."""
    g = torch.Generator().manual_seed(seed)
    weights = [0.1 + 0.9 * torch.rand(sizes[k + 1], sizes[k], generator=g, dtype=F64) for k in range(len(sizes) - 1)]
    biases = [bias_a * torch.randn(n, generator=g, dtype=F64) for n in sizes[1:]]
    boxes = [diode_boxes(n, kind, lower_v=lower_v, upper_v=upper_v) for n in sizes[1:-1]] + [None]
    x = 2.0 * torch.rand(5, sizes[0], generator=g, dtype=F64) - 1.0
    y = 0.3 * torch.randn(5, sizes[-1], generator=g, dtype=F64)
    return weights, biases, boxes, x, y


def nodal_system(weights, biases, x, beta=0.0, y=None):
    """Full graph Laplacian over all nodes, reduced to the free ones: ``A v = rhs`` (A in S, rhs in A)."""
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    n_all = offsets[-1]
    lap = torch.zeros(n_all, n_all, dtype=F64)
    for k, w in enumerate(weights, start=1):
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                a, b = offsets[k] + i, offsets[k - 1] + j
                g = w[i, j]
                lap[a, a] += g
                lap[b, b] += g
                lap[a, b] -= g
                lap[b, a] -= g
    n0 = sizes[0]
    a_ff = lap[n0:, n0:].clone()
    rhs = -(x @ lap[n0:, :n0].T) + torch.cat(biases)
    if beta:
        out = torch.arange(offsets[-2], offsets[-1]) - n0
        a_ff[out, out] += beta
        rhs[:, out] += beta * y
    return a_ff, rhs, sizes


def flat(voltages):
    return torch.cat(list(voltages), 1)


def direct_energy(weights, biases, x, voltages, beta=0.0, y=None):
    """Co-content term by term: 1/2 sum W (v_i - v_j)^2 - b.v + beta/2 |v_L - y|^2, ``(batch,)``."""
    layers = [x, *voltages]
    e = torch.zeros(len(x), dtype=F64)
    for k, (w, b) in enumerate(zip(weights, biases), start=1):
        diff = layers[k][:, :, None] - layers[k - 1][:, None, :]
        e = e + 0.5 * (w * diff**2).sum((1, 2)) - layers[k] @ b
    if beta:
        e = e + 0.5 * beta * ((layers[-1] - y) ** 2).sum(1)
    return e


DEPTHS = [[4, 3], [5, 7, 3], [6, 8, 7, 4], [6, 9, 8, 7, 6, 3]]


@pytest.mark.parametrize("sizes", DEPTHS, ids=lambda s: f"L{len(s) - 1}")
@pytest.mark.parametrize("kind", ["none", "split", "both", "lower"])
@pytest.mark.parametrize("beta", [0.0, 0.3, -0.3])
def test_kkt_conditions_hold_at_the_solution(sizes, kind, beta):
    weights, biases, boxes, x, y = random_network(1, sizes, kind)
    sol = solve_layered(x, weights, biases, boxes, beta=beta, target=y if beta else None, tol_v=1e-14)
    assert sol.converged
    v = flat(sol.voltages_v)
    a_ff, rhs, _ = nodal_system(weights, biases, x, beta, y)
    current = rhs - v @ a_ff.T  # current into each free node from resistors, sources and the nudging load
    lo = torch.cat([b[0] if b else torch.full((n,), -math.inf, dtype=F64) for b, n in zip(boxes, sizes[1:])])
    hi = torch.cat([b[1] if b else torch.full((n,), math.inf, dtype=F64) for b, n in zip(boxes, sizes[1:])])
    assert (v >= lo).all() and (v <= hi).all()
    at_lo, at_hi = v == lo, v == hi
    inside = ~at_lo & ~at_hi
    tol = 1e-12
    assert current[inside].abs().max() <= tol
    if at_lo.any():
        assert current[at_lo].max() <= tol  # the lower diode delivers -I >= 0 into the node
    if at_hi.any():
        assert current[at_hi].min() >= -tol  # the upper diode sinks I >= 0
    if kind in ("split", "both", "lower") and len(sizes) > 2:
        assert (at_lo | at_hi).any(), "the boxes should be active somewhere for the test to mean something"
        assert inside[:, : sum(sizes[1:-1])].any()
    # the library's KKT report agrees with this one
    kkt = kkt_residuals(x, weights, biases, boxes, voltages_v=sol.voltages_v, beta=beta, target=y if beta else None)
    torch.testing.assert_close(flat(kkt.currents_a), current, rtol=0, atol=1e-13)
    assert kkt.max_residual_a <= tol and kkt.max_bound_violation_v == 0.0
    assert sol.max_residual_a <= tol


def test_kkt_residuals_flag_a_wrong_state():
    weights, biases, boxes, x, _ = random_network(2, [5, 7, 3], "split")
    sol = solve_layered(x, weights, biases, boxes, tol_v=1e-14)
    wrong = [v + 0.01 for v in sol.voltages_v]
    kkt = kkt_residuals(x, weights, biases, boxes, voltages_v=wrong)
    assert kkt.max_residual_a > 1e-3


@pytest.mark.parametrize("sizes", DEPTHS, ids=lambda s: f"L{len(s) - 1}")
@pytest.mark.parametrize("beta", [0.0, 0.5, -0.5])
def test_without_diodes_it_is_the_linear_nodal_solve(sizes, beta):
    weights, biases, _, x, y = random_network(3, sizes, "none")
    sol = solve_layered(x, weights, biases, None, beta=beta, target=y if beta else None, tol_v=1e-14)
    a_ff, rhs, _ = nodal_system(weights, biases, x, beta, y)
    exact = torch.linalg.solve(a_ff, rhs.T).T
    torch.testing.assert_close(flat(sol.voltages_v), exact, rtol=0, atol=1e-11)


def _netlist_twin(weights, biases, boxes, x, diode, beta=0.0, y=None) -> tuple[Circuit, list[int]]:
    """The same network as a flat circuit: input sources, resistors, bias current sources, diodes to ground
    with series bias (a reverse diode with bias -lo clamps from below, a forward one with bias hi from above),
    and for the nudged phase a resistor beta from each output to a source at its target."""
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    n_out = sizes[-1]
    names = [f"n{i}" for i in range(offsets[-1])] + ([f"t{i}" for i in range(n_out)] if beta else [])
    pairs, cond = [], []
    for k, w in enumerate(weights, start=1):
        i, j = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
        pairs.append(torch.stack([offsets[k] + i.flatten(), offsets[k - 1] + j.flatten()], 1))
        cond.append(w.flatten())
    sources = list(range(sizes[0]))
    source_v = x
    if beta:
        targets = torch.arange(offsets[-1], offsets[-1] + n_out)
        pairs.append(torch.stack([torch.arange(offsets[-2], offsets[-1]), targets], 1))
        cond.append(torch.full((n_out,), beta, dtype=F64))
        sources += targets.tolist()
        source_v = torch.cat([x, y], 1)
    anode, cathode, bias = [], [], []
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        lo, hi = box
        for i in range(sizes[k]):
            node = offsets[k] + i
            if math.isfinite(lo[i]):
                anode.append(GROUND), cathode.append(node), bias.append(-float(lo[i]))
            if math.isfinite(hi[i]):
                anode.append(node), cathode.append(GROUND), bias.append(float(hi[i]))
    circuit = Circuit(
        node_names=tuple(names),
        resistor_nodes=torch.cat(pairs),
        conductance_s=torch.cat(cond),
        source_nodes=torch.tensor(sources),
        source_v=source_v,
        diodes=(DiodeGroup(diode, torch.tensor(anode), torch.tensor(cathode), torch.tensor(bias, dtype=F64)),),
        current_nodes=torch.arange(offsets[1], offsets[-1]),
        current_a=torch.cat(biases),
    )
    return circuit, list(range(offsets[1], offsets[-1]))


@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_agrees_with_newton_as_the_diodes_get_steeper(beta):
    sizes = [6, 8, 7, 3]
    weights, biases, boxes, x, y = random_network(4, sizes, "split")
    ideal = solve_layered(x, weights, biases, boxes, beta=beta, target=y if beta else None, tol_v=1e-14)
    v_ideal = flat(ideal.voltages_v)
    clamped = torch.cat([(v == b[0]) | (v == b[1]) for v, b in zip(ideal.voltages_v[:-1], boxes[:-1])], 1)
    assert clamped.any() and not clamped.all()
    gaps = []
    for g_on in (1e1, 1e3, 1e5, 1e7):
        diode = PiecewiseLinearDiode(on_conductance_s=g_on, off_conductance_s=1e-12, knee_v=0.0)
        circuit, free = _netlist_twin(weights, biases, boxes, x, diode, beta, y)
        newton = solve_dc(circuit, options=SolverOptions(max_iterations=400))
        gaps.append(float((newton.voltages_v[:, free] - v_ideal).abs().max()))
    # the gap shrinks like 1/g_on (diode currents are O(1) A here)
    assert all(later < earlier / 30 for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-6, gaps


def test_agrees_with_newton_on_a_model_built_with_the_layer_api():
    """Input -> Dense -> (half reverse, half forward diodes) -> Dense output with output current sources.

    The layer API has no current sources on hidden nodes, so the hidden biases are 0 here (the netlist twin
    above covers them); the output biases are the model's output current sources.
    """
    g = torch.Generator().manual_seed(5)
    n0, m, n_out, lower_v, upper_v = 5, 4, 3, -0.05, 0.05
    g_on = 1e7
    diode = PiecewiseLinearDiode(on_conductance_s=g_on, off_conductance_s=1e-12, knee_v=0.0)
    x_nodes = Input(n0, name="x")
    ha = Diodes(diode, orientation="reverse", bias_v=-lower_v, name="da")(Dense(m, bounds_s=(1e-3, 10.0), name="ha")(x_nodes))
    hb = Diodes(diode, orientation="forward", bias_v=upper_v, name="db")(Dense(m, bounds_s=(1e-3, 10.0), name="hb")(x_nodes))
    out = Dense(n_out, bounds_s=(1e-3, 10.0), name="out")(Concatenate()([ha, hb]))
    model = Model(x_nodes, out)
    w1 = 0.1 + 0.9 * torch.rand(2 * m, n0, generator=g, dtype=F64)
    w2 = 0.1 + 0.9 * torch.rand(n_out, 2 * m, generator=g, dtype=F64)
    b_out = 0.2 * torch.randn(n_out, generator=g, dtype=F64)
    model.set_parameter_values({"ha.conductance_s": w1[:m].T, "hb.conductance_s": w1[m:].T, "out.conductance_s": w2.T})
    x = 2.0 * torch.rand(6, n0, generator=g, dtype=F64) - 1.0
    newton = model.solve(x, b_out.expand(6, -1))
    boxes = [diode_boxes(2 * m, "split", lower_v=lower_v, upper_v=upper_v), None]
    ideal = solve_layered(x, [w1, w2], [torch.zeros(2 * m, dtype=F64), b_out], boxes, tol_v=1e-14)
    hidden = torch.cat([model.node_voltages(newton, ha), model.node_voltages(newton, hb)], 1)
    lo, hi = boxes[0]
    assert ((ideal.voltages_v[0] == lo) | (ideal.voltages_v[0] == hi)).any()
    torch.testing.assert_close(hidden, ideal.voltages_v[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.output_voltages(newton), ideal.output_v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.3, -0.3])
def test_energy_decreases_every_sweep_to_the_minimum(beta):
    sizes = [6, 9, 8, 7, 3]
    weights, biases, boxes, x, y = random_network(6, sizes, "split")
    target = y if beta else None
    energies = []
    for sweeps in range(0, 25):
        if sweeps == 0:
            v = [torch.zeros(len(x), n, dtype=F64).clamp(b[0], b[1]) if b else torch.zeros(len(x), n, dtype=F64)
                 for n, b in zip(sizes[1:], boxes)]  # fmt: skip
        else:
            v = solve_layered(
                x, weights, biases, boxes, beta=beta, target=target, max_sweeps=sweeps, tol_v=1e-300, check=False
            ).voltages_v
        energies.append(direct_energy(weights, biases, x, v, beta, y))
    e = torch.stack(energies)
    scale = e.abs().max()
    assert (e[1:] <= e[:-1] + 1e-13 * scale).all()
    assert (e[-1] < e[0] - 1e-3 * scale).all()
    # the recorded history is the same co-content
    rec = solve_layered(
        x, weights, biases, boxes, beta=beta, target=target, max_sweeps=24, tol_v=1e-300, check=False, record_energy=True
    )
    torch.testing.assert_close(rec.energy_history_w, e, rtol=1e-12, atol=1e-12 * float(scale))
    # and the converged state is a minimum over the feasible set: random feasible moves only raise E
    sol = solve_layered(x, weights, biases, boxes, beta=beta, target=target, tol_v=1e-14)
    e_star = direct_energy(weights, biases, x, sol.voltages_v, beta, y)
    torch.testing.assert_close(
        layered_energy_w(x, weights, biases, boxes, voltages_v=sol.voltages_v, beta=beta, target=target), e_star
    )
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        moved = []
        for v, b in zip(sol.voltages_v, boxes):
            w = v + 1e-3 * torch.randn(v.shape, generator=g, dtype=F64)
            moved.append(w.clamp(b[0], b[1]) if b else w)
        assert (direct_energy(weights, biases, x, moved, beta, y) >= e_star - 1e-13).all()


def test_warm_start_and_single_layer():
    weights, biases, boxes, x, y = random_network(8, [6, 8, 7, 3], "both")
    net = LayeredNetwork(weights, biases, boxes)
    free = solve_layered(x, net, tol_v=1e-13)
    cold = solve_layered(x, net, beta=0.1, target=y, tol_v=1e-13)
    warm = solve_layered(x, net, beta=0.1, target=y, tol_v=1e-13, v_init=free.voltages_v)
    assert warm.sweeps < cold.sweeps
    torch.testing.assert_close(flat(warm.voltages_v), flat(cold.voltages_v), rtol=0, atol=1e-11)
    # L = 1: the output is the conductance-weighted mean of the inputs (plus bias)
    w, b = weights[0], biases[0]
    one = solve_layered(x, [w], [b], tol_v=1e-14)
    torch.testing.assert_close(one.output_v, (x @ w.T + b) / w.sum(1), rtol=0, atol=1e-14)
    assert one.sweeps <= 2


def test_no_convergence_raises_or_reports():
    weights, biases, boxes, x, _ = random_network(9, [6, 9, 8, 7, 3], "split")
    with pytest.raises(SimulationError, match="did not converge in 2 sweeps"):
        solve_layered(x, weights, biases, boxes, max_sweeps=2, tol_v=1e-14)
    sol = solve_layered(x, weights, biases, boxes, max_sweeps=2, tol_v=1e-14, check=False)
    assert not sol.converged and sol.sweeps == 2 and sol.max_residual_a > 0


def test_bad_inputs_name_the_value():
    weights, biases, boxes, x, y = random_network(10, [4, 5, 3], "split")
    bad = [w.clone() for w in weights]
    bad[1][2, 1] = -0.5
    with pytest.raises(ConfigError, match=r"W_2\[2, 1\].*-0\.5 S"):
        LayeredNetwork(bad, biases, boxes)
    bad[1][2, 1] = math.nan
    with pytest.raises(ConfigError, match=r"W_2\[2, 1\].*nan"):
        LayeredNetwork(bad, biases, boxes)
    with pytest.raises(ConfigError, match="columns must match the 5 nodes of layer 1"):
        LayeredNetwork([weights[0], weights[1].T], None, None)
    with pytest.raises(ConfigError, match=r"node 1 of layer 1 has the empty .*\[0\.2, -0\.2\]"):
        LayeredNetwork(weights, biases, [(torch.tensor([0.0, 0.2, 0, 0, 0]), torch.tensor([1.0, -0.2, 1, 1, 1])), None])
    with pytest.raises(ConfigError, match=r"lower bounds of layer 1 must have shape \(5,\)"):
        LayeredNetwork(weights, biases, [(torch.zeros(4), torch.ones(4)), None])
    with pytest.raises(ConfigError, match="bias current of node 0 of layer 2 is inf"):
        LayeredNetwork(weights, [biases[0], torch.tensor([math.inf, 0.0, 0.0])], boxes)
    zero = [weights[0].clone(), weights[1].clone()]
    zero[1][:, 3] = 0.0
    zero[0][3] = 0.0
    with pytest.raises(ConfigError, match="node 3 of layer 1 has no conductance"):
        LayeredNetwork(zero, biases, boxes)
    net = LayeredNetwork(weights, biases, boxes)
    x_nan = x.clone()
    x_nan[2, 1] = math.nan
    with pytest.raises(VoltageError, match="input voltage 1 of sample 2 is nan"):
        solve_layered(x_nan, net)
    with pytest.raises(VoltageError, match=r"shape \(batch >= 1, 4\), got \(5, 3\)"):
        solve_layered(x[:, :3], net)
    with pytest.raises(VoltageError, match="a target"):
        solve_layered(x, net, beta=0.1)
    with pytest.raises(ConfigError, match="beta = -100.0 S leaves output node"):
        solve_layered(x, net, beta=-100.0, target=y)
    with pytest.raises(ConfigError, match="give biases and boxes inside"):
        solve_layered(x, net, biases)
    with pytest.raises(VoltageError, match=r"v_init of layer 2 must have shape \(5, 3\)"):
        solve_layered(x, net, v_init=[torch.zeros(5, 5), torch.zeros(5, 2)])


def test_fixed_sweeps_reused_drive_and_unchecked_network_give_the_same_state():
    weights, biases, boxes, x, y = random_network(11, [6, 8, 7, 3], "split")
    net = LayeredNetwork(weights, biases, boxes)
    reference = solve_layered(x, net, tol_v=1e-300, max_sweeps=5, check=False)
    fixed = solve_layered(x, net, tol_v=0.0, max_sweeps=5, check=False, kkt=False)
    assert fixed.sweeps == 5 and math.isnan(fixed.max_residual_a)
    assert fixed.max_change_v == pytest.approx(reference.max_change_v, rel=1e-12)
    torch.testing.assert_close(flat(fixed.voltages_v), flat(reference.voltages_v), rtol=0, atol=0)
    torch.testing.assert_close(fixed.input_drive_a, x @ weights[0].T, rtol=1e-15, atol=1e-15)
    # the nudged phase from the free one, with the free phase's input drive: the same steady state
    free = solve_layered(x, net, tol_v=1e-13)
    again = solve_layered(x, net, beta=0.2, target=y, tol_v=1e-13, v_init=free.voltages_v, input_drive_a=free.input_drive_a)
    fresh = solve_layered(x, net, beta=0.2, target=y, tol_v=1e-13)
    torch.testing.assert_close(flat(again.voltages_v), flat(fresh.voltages_v), rtol=0, atol=1e-11)
    lows, highs = zip(*boxes[:-1], (torch.full((3,), -math.inf, dtype=F64), torch.full((3,), math.inf, dtype=F64)))
    fast = LayeredNetwork.unchecked(weights, biases, lows, highs)
    for a, b in zip(fast.degree_s, net.degree_s):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(flat(solve_layered(x, fast, tol_v=1e-13).voltages_v), flat(free.voltages_v), rtol=0, atol=0)
    with pytest.raises(VoltageError, match="input_drive_a must have shape"):
        solve_layered(x, net, input_drive_a=torch.zeros(2, 8, dtype=F64))


def test_a_nan_stops_the_sweeps_at_once():
    weights, biases, boxes, x, _ = random_network(12, [4, 5, 3], "split")
    weights[0][1, 1] = math.nan
    lows, highs = zip(*boxes[:-1], (torch.full((3,), -math.inf, dtype=F64), torch.full((3,), math.inf, dtype=F64)))
    sol = solve_layered(x, LayeredNetwork.unchecked(weights, biases, lows, highs), max_sweeps=100_000, check=False)
    assert sol.sweeps == 1 and not sol.converged


@pytest.mark.skipif(not ngspice_available("shared"), reason="libngspice not installed")
def test_agrees_with_ngspice_as_the_diodes_get_steeper():
    weights, biases, boxes, x, y = random_network(4, [6, 8, 7, 3], "split")
    x = x[:2]
    ideal = flat(solve_layered(x, weights, biases, boxes, tol_v=1e-14).voltages_v)
    gaps = []
    for g_on in (1e1, 1e3, 1e5):
        diode = PiecewiseLinearDiode(on_conductance_s=g_on, off_conductance_s=1e-12, knee_v=0.0)
        circuit, free = _netlist_twin(weights, biases, boxes, x, diode)
        spice = solve_ngspice(circuit).voltages_v[:, free]
        newton = solve_dc(circuit, options=SolverOptions(max_iterations=400)).voltages_v[:, free]
        assert float((spice - newton).abs().max()) < 1e-6  # ngspice's own tolerances
        gaps.append(float((spice - ideal).abs().max()))
    assert all(later < earlier / 30 for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-4, gaps
