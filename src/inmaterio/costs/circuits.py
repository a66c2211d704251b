r"""Energy of an EP circuit: the power at its operating point times the time it takes to settle.

**Power.** At a DC operating point the resistors and diodes dissipate
:math:`P = \sum_R G (\Delta V)^2 + \sum_D u\, I_D(u)` (the solver's
:meth:`~inmaterio.circuits.graph.Model.power_w`). By Tellegen's theorem this
equals the power the active elements deliver (:func:`delivered_power_w`):

.. math::

    P = \sum_S V_s I_s + \sum_A I_a (V_{out,a} - k_a V_{in,a}) + \sum_C V_c I_c

(voltage sources: their voltage times the current they push into their node;
amplifiers: the output held at ``gain * V_in`` delivers :math:`I_a` and draws
:math:`k_a I_a` from the input, :math:`k_a` the current gain; current
sources: the node voltage times the injected current). Amplifiers are taken
as ideal (their supply delivers exactly this power: an assumption, a lower
bound on a real amplifier).

**Settling time** (:class:`SettlingAssumption`, an assumption with a
default): every node carries a capacitance :math:`C_n` to ground; a node's
time constant is :math:`\tau_n = C_n / \sum G` over the resistors joined to
it (diodes and amplifiers left out, so it is an upper bound of the linear
part's). The circuit has settled after ``time_constants`` of the slowest
node: :math:`t_s = m\,\max_n \tau_n` (``m = 7`` leaves :math:`e^{-7} < 10^{-3}`
of a step).

**Energy**: inference :math:`E = P_{free}\, t_s`; one EP training step
:math:`E = \sum_{phases} P_{phase}\, t_s` over the free phase and the
nudged ones (one for ``positive``/``random-sign``, two for ``symmetric``),
each at its own operating point when nudging currents are given. The power
of the weight update (pulses on the conductances) is not included.

**Deep resistive networks** (:class:`~inmaterio.circuits.drn.DeepResistiveNetwork`, solved by the layered
solver rather than as a :class:`~inmaterio.circuits.graph.Model`): the same rules on the layered circuit
(:func:`drn_circuit_cost`). Conductances dissipate :math:`\sum_k \sum_{ij} W_{k,ij} (v_{k,i} - v_{k-1,j})^2`;
an ideal diode conducts with no voltage across it and dissipates nothing. The active side
(:func:`drn_delivered_power_w`): the input sources :math:`\sum_j u_j I_j` (``I_j`` the current source ``j``
pushes into layer 1), the bias current sources :math:`\sum_k b_k \cdot v_k`, and the sources the conducting
diodes clamp their nodes to (the box bound times the diode's current). The DRN is normalised
(:mod:`inmaterio.circuits.drn`): one normalised siemens is ``conductance_unit_s`` S and one normalised volt
``volt_unit_v`` V, so powers scale by ``conductance_unit_s * volt_unit_v**2`` and the time constants by
``1 / conductance_unit_s``. A node's conductance is its row and column sums (``degree_s``); the nudging load of
a nudged phase (a conductance ``beta`` to the target) is not counted in that phase's power.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from inmaterio.circuits.graph import Model
from inmaterio.circuits.netlist import Circuit, ground_last, with_ground
from inmaterio.circuits.solve import DCSolution, kcl_currents
from inmaterio.circuits.solve.layered import LayeredNetwork
from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError

__all__ = [
    "DEFAULT_SETTLING",
    "SettlingAssumption",
    "power_by_part_w",
    "CircuitCost",
    "delivered_power_w",
    "settling_time_s",
    "ep_circuit_cost",
    "drn_power_by_layer_w",
    "drn_delivered_power_w",
    "drn_circuit_cost",
]


class SettlingAssumption(StrictModel):
    """How long a circuit takes to settle (see the module docstring).

    node_capacitance_f : capacitance of every node to ground, F (> 0; default 100 fF, an on-chip node).
    time_constants : settling time in units of the slowest node's time constant (> 0; 7: within 1e-3).
    """

    node_capacitance_f: float = Field(100e-15, gt=0)
    time_constants: float = Field(7.0, gt=0)


#: The default settling assumption.
DEFAULT_SETTLING = SettlingAssumption()


def delivered_power_w(circuit: Circuit, solution: DCSolution) -> torch.Tensor:
    """``(batch,)`` power delivered by the voltage sources, amplifiers and current sources (W), Tellegen's side."""
    v = with_ground(solution.voltages_v)
    n = solution.voltages_v.shape[1]
    b = v.shape[0]
    net, amp = kcl_currents(circuit, solution.voltages_v)
    p = torch.zeros(b, dtype=v.dtype)
    if len(circuit.source_nodes):
        idx = ground_last(circuit.source_nodes, n)
        p = p + (v[:, idx] * net[:, idx]).sum(1)  # net current leaving the node into the elements = source current
    if len(circuit.amplifier_nodes):
        vin = v[:, ground_last(circuit.amplifier_nodes[:, 0], n)]
        vout = v[:, ground_last(circuit.amplifier_nodes[:, 1], n)]
        k = circuit.current_gain.to(v.dtype).expand(b, -1)
        p = p + (amp * (vout - k * vin)).sum(1)
    if len(circuit.current_nodes):
        cur = circuit.current_a.to(v.dtype).expand(b, -1)
        p = p + (v[:, ground_last(circuit.current_nodes, n)] * cur).sum(1)
    return p


def settling_time_s(circuit: Circuit, settling: SettlingAssumption = DEFAULT_SETTLING) -> float:
    """``time_constants * max_n C_n / sum_{R at n} G`` over the free nodes (s); the conductances of the first circuit."""
    g = circuit.conductance_s
    g = g if g.dim() == 1 else g[0]
    n = circuit.n_nodes
    total = torch.zeros(n + 1, dtype=torch.float64)
    if len(circuit.resistor_nodes):
        ends = ground_last(circuit.resistor_nodes, n)
        total.index_add_(0, ends[:, 0], g.to(torch.float64)).index_add_(0, ends[:, 1], g.to(torch.float64))
    fixed = torch.zeros(n + 1, dtype=torch.bool)
    fixed[n] = True
    fixed[ground_last(circuit.source_nodes, n)] = True  # held by sources
    if len(circuit.amplifier_nodes):
        fixed[ground_last(circuit.amplifier_nodes[:, 1], n)] = True  # held by amplifiers
    free = total[~fixed]
    if len(free) == 0:
        return 0.0
    if (free <= 0).any():
        raise ConfigError("a free node has no resistor: its settling time is unbounded (give it a conductance)")
    return float(settling.time_constants * settling.node_capacitance_f / free.min())


def power_by_part_w(model: Model, solution: DCSolution) -> dict[str, torch.Tensor]:
    """``(batch,)`` power dissipated per part of the circuit (W): each conductance parameter's resistors (keyed by the
    parameter, e.g. ``h.conductance_s``) and all diodes (``diodes``); the parts sum to :meth:`Model.power_w`."""
    v = with_ground(solution.voltages_v)
    n = solution.voltages_v.shape[1]
    ends = ground_last(model._template.resistor_nodes, n)
    per_resistor = model.conductances().detach().to(v.dtype) * (v[:, ends[:, 0]] - v[:, ends[:, 1]]) ** 2  # (batch, R)
    parts: dict[str, torch.Tensor] = {}
    for seg in model.segments:
        chunk = per_resistor[:, seg.start : seg.start + len(seg.flat_index)].sum(1)
        parts[seg.key] = parts.get(seg.key, 0) + chunk
    diodes = torch.zeros(v.shape[0], dtype=v.dtype)
    for grp in model._template.diodes:
        u = v[:, ground_last(grp.anode, n)] - v[:, ground_last(grp.cathode, n)]
        diodes = diodes + (u * grp.model.current(u - grp.bias_v)).sum(1)
    if model._template.diodes:
        parts["diodes"] = diodes
    return parts


@dataclass(frozen=True)
class CircuitCost:
    """Cost of an EP circuit per sample (means over the batch).

    Attributes:
        power_w: dissipated power of the free phase, W.
        delivered_w: power the sources deliver in the free phase (Tellegen: equals ``power_w``), W.
        settling_s: settling time, s.
        inference_j: ``power_w * settling_s``, J.
        training_step_j: sum over the phases of a training step of their power times ``settling_s``, J.
        phases: phases of a training step (free + nudged).
        ops: operations of one inference, 2 per conductance (a multiply and an add, the count of the
            equivalent matrix products).
        parts_w: free-phase power per part (:func:`power_by_part_w`), W.
        part_ops: operations per conductance parameter (2 per resistor).
    """

    power_w: float
    delivered_w: float
    settling_s: float
    inference_j: float
    training_step_j: float
    phases: int
    ops: int
    parts_w: dict[str, float]
    part_ops: dict[str, int]


def ep_circuit_cost(
    model: Model,
    x,
    *,
    nudge_currents_a: torch.Tensor | None = None,
    variant: str = "symmetric",
    settling: SettlingAssumption = DEFAULT_SETTLING,
) -> CircuitCost:
    """Energy of inference and of one EP training step of ``model`` on inputs ``x`` (see the module docstring).

    Args:
        model: the circuit.
        x: ``(batch, features)`` inputs, V.
        nudge_currents_a: ``(batch, n_outputs)`` nudging currents of the nudged phase, A (``-beta dL/dV``);
            the symmetric variant also solves with their negatives. None: the nudged phases are taken at the
            free phase's power (they differ from it by O(beta)).
        variant: ``symmetric`` (free + 2 nudged phases), ``one-sided`` (the EP training config's name; alias
            ``positive``) or ``random-sign`` (free + 1).
        settling: the settling assumption.
    """
    if variant not in ("symmetric", "one-sided", "positive", "random-sign"):
        raise ConfigError(f"variant must be 'symmetric', 'one-sided' (or 'positive') or 'random-sign', got {variant!r}")
    free = model.solve(x)
    circuit = model.circuit(x)
    p_free = model.power_w(free)
    delivered = delivered_power_w(circuit, free)
    t_s = settling_time_s(circuit, settling)
    signs = (1.0, -1.0) if variant == "symmetric" else (1.0,)
    phase_powers = [float(p_free.mean())]
    for sign in signs:
        if nudge_currents_a is None:
            phase_powers.append(float(p_free.mean()))
        else:
            phase_powers.append(float(model.power_w(model.solve(x, sign * nudge_currents_a)).mean()))
    ops = 2 * int(model.conductances().numel())
    p = float(p_free.mean())
    parts = {k: float(v.mean()) for k, v in power_by_part_w(model, free).items()}
    part_ops: dict[str, int] = {}
    for seg in model.segments:
        part_ops[seg.key] = part_ops.get(seg.key, 0) + 2 * len(seg.flat_index)
    return CircuitCost(p, float(delivered.mean()), t_s, p * t_s, sum(phase_powers) * t_s, len(phase_powers), ops, parts, part_ops)


def drn_power_by_layer_w(net: LayeredNetwork, inputs_v: torch.Tensor, voltages_v) -> torch.Tensor:
    """``(batch, L)`` power dissipated in each layer's conductances, ``sum_ij W_k,ij (v_k,i - v_k-1,j)^2``.

    Args:
        net: the layered network (conductances ``W_k (n_k, n_k-1)``).
        inputs_v: ``(batch, n_0)`` input source voltages.
        voltages_v: one ``(batch, n_k)`` tensor per layer ``1 .. L`` (a steady state's ``voltages_v``).

    In the network's units (W when its conductances are in S and voltages in V).
    """
    out, prev = [], inputs_v
    for w, v in zip(net.weights_s, voltages_v):
        # sum_ij W_ij (v_i - u_j)^2 = sum_i v_i^2 (W 1)_i + sum_j u_j^2 (1^T W)_j - 2 v^T W u
        out.append(v.square() @ w.sum(1) + prev.square() @ w.sum(0) - 2.0 * ((v @ w) * prev).sum(1))
        prev = v
    return torch.stack(out, dim=1)


def drn_delivered_power_w(net: LayeredNetwork, inputs_v: torch.Tensor, voltages_v) -> torch.Tensor:
    """``(batch,)`` power the layered network's sources deliver at a free steady state: Tellegen's side.

    Input sources ``sum_j u_j sum_i W_1,ij (u_j - v_1,i)``, bias current sources ``sum_k b_k . v_k``, and the
    sources of the conducting diodes: at a node on its box bound ``c`` the diode carries ``-I`` into it (``I`` the
    current the conductances and the bias source deliver into the node, as in
    :func:`~inmaterio.circuits.solve.layered.kkt_residuals`), its source delivers ``-c I``. Nodes inside their box
    contribute nothing (KCL holds there at a steady state), so this equals :func:`drn_power_by_layer_w` summed over
    layers only at a true steady state.
    Arguments as :func:`drn_power_by_layer_w`.
    """
    w1, v1 = net.weights_s[0], voltages_v[0]
    p = inputs_v.square() @ w1.sum(0) - ((v1 @ w1) * inputs_v).sum(1)
    layers = [inputs_v, *voltages_v]
    for k in range(1, net.n_layers + 1):
        v, lo, hi = layers[k], net.lower_v[k - 1], net.upper_v[k - 1]
        p = p + v @ net.biases_a[k - 1]
        current = layers[k - 1] @ net.weights_s[k - 1].T - v * net.degree_s[k - 1] + net.biases_a[k - 1]
        if k < net.n_layers:
            current = current + layers[k + 1] @ net.weights_s[k]
        at_lo, at_hi = v <= lo, v >= hi
        bound = torch.where(at_lo, lo.expand_as(v), torch.where(at_hi, hi.expand_as(v), torch.zeros_like(v)))
        p = p - torch.where(at_lo | at_hi, bound * current, torch.zeros_like(v)).sum(1)
    return p


def drn_circuit_cost(
    model,
    x,
    labels=None,
    *,
    beta: float = 1.0,
    variant: str = "symmetric",
    conductance_unit_s: float,
    volt_unit_v: float,
    settling: SettlingAssumption = DEFAULT_SETTLING,
    tol_v: float = 1e-9,
) -> CircuitCost:
    """Energy of inference and of one EP training step of a deep resistive network (see the module docstring).

    Args:
        model: a :class:`~inmaterio.circuits.drn.DeepResistiveNetwork` (normalised units).
        x: ``(batch, n_features)`` features (normalised; the sources are ``+-input_gain * x``).
        labels: ``(batch,)`` class indices: the nudged phases are solved towards their one-hot targets with
            ``+-beta``; None: the nudged phases are taken at the free phase's power.
        beta: EP's nudging strength (normalised siemens).
        variant: ``symmetric`` (free + 2 nudged phases), ``positive``, ``negative`` (free + 1) or ``random_sign``
            (free + 1, its power the mean of the two signs').
        conductance_unit_s: siemens of one normalised conductance (> 0).
        volt_unit_v: volts of one normalised volt (> 0).
        settling: the settling assumption (node capacitance, time constants).
        tol_v: the steady states are solved until no node moves by more than this (normalised V).

    Returns:
        the :class:`CircuitCost` in physical units; ``parts_w`` and ``part_ops`` keyed ``W1 .. WL``.

    Raises:
        ConfigError: a bad variant or unit, a negative or non-finite conductance, a node without a conductance.
    """
    from inmaterio.circuits.drn import DRN_VARIANTS, SolveSettings

    if variant not in DRN_VARIANTS:
        raise ConfigError(f"variant must be one of {DRN_VARIANTS}, got {variant!r}")
    for name, value in (("conductance_unit_s", conductance_unit_s), ("volt_unit_v", volt_unit_v)):
        if not (isinstance(value, int | float) and 0 < value < float("inf")):
            raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    settings = SolveSettings(sweeps=None, tol_v=tol_v)
    net, u = model.network(validate=True), model.inputs_v(x)
    free = settings.solve(u, net)
    model.check_state(free)
    power_scale = conductance_unit_s * volt_unit_v**2
    by_layer = drn_power_by_layer_w(net, u, free.voltages_v) * power_scale  # (batch, L)
    delivered = drn_delivered_power_w(net, u, free.voltages_v) * power_scale
    p_free = float(by_layer.sum(1).mean())
    degree = torch.cat(net.degree_s)
    t_s = float(settling.time_constants * settling.node_capacitance_f / (conductance_unit_s * float(degree.min())))
    nudged: list[float] = []
    signs = {"symmetric": (1.0, -1.0), "positive": (1.0,), "negative": (-1.0,), "random_sign": (1.0, -1.0)}[variant]
    for sign in signs:
        if labels is None:
            nudged.append(p_free)
            continue
        y = torch.nn.functional.one_hot(torch.as_tensor(labels).long(), net.sizes[-1]).to(u.dtype)
        state = settings.solve(u, net, beta=sign * beta, target=y, start=free)
        nudged.append(float(drn_power_by_layer_w(net, u, state.voltages_v).sum(1).mean()) * power_scale)
    if variant == "random_sign":
        nudged = [sum(nudged) / 2]
    parts = {f"W{k + 1}": float(by_layer[:, k].mean()) for k in range(net.n_layers)}
    part_ops = {f"W{k + 1}": 2 * w.numel() for k, w in enumerate(net.weights_s)}
    ops = sum(part_ops.values())
    energies = (p_free + sum(nudged)) * t_s
    return CircuitCost(p_free, float(delivered.mean()), t_s, p_free * t_s, energies, 1 + len(nudged), ops, parts, part_ops)
