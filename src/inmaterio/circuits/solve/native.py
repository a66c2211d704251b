"""Native batched DC solver: modified nodal analysis and Newton's method with SPICE's junction limiting.

All circuits of a batch share one topology (a :class:`~inmaterio.circuits.netlist.Circuit`)
and are solved together: one batched ``torch.linalg.solve`` per Newton
iteration, on CPU or GPU, in float64.

The unknowns are the voltages of the *free* nodes (every node not fixed by a
voltage source). The linear part (resistors, sources, injected currents) is
stamped once per call; each iteration adds the companion model of every
diode linearised at its operating voltage ``v_k`` (conductance ``g = i'(v_k)``
and current ``i(v_k) - g v_k``), applies the amplifier rows (an amplifier's
output row becomes ``V_out - gain * V_in = 0`` and the current it delivers,
times ``current_gain``, is drawn from its input row), solves, and moves each
diode's operating voltage to the new one through the element's limiter (for
Shockley diodes SPICE's ``pnjlim``). A circuit has converged when no limiter
acted and every free node moved less than ``reltol * max|V| + vntol``;
converged circuits leave the batch. The result is then checked against
Kirchhoff's current law at every free node.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import SimulationError
from ..netlist import DTYPE, GROUND, Circuit

__all__ = ["DCSolution", "SolverOptions", "kcl_currents", "solve_dc"]


@dataclass(frozen=True)
class SolverOptions:
    """Tolerances of the Newton iteration.

    Attributes:
        reltol: relative change of the node voltages at convergence.
        vntol_v: absolute change of the node voltages at convergence (V).
        max_iterations: Newton iterations before the solve fails.
        kcl_rtol: the KCL residual at every free node must stay below
            ``kcl_rtol`` times the largest current through any element
            (plus ``kcl_atol_a``), or the solve fails.
        kcl_atol_a: absolute KCL tolerance in amperes.
    """

    reltol: float = 1e-10
    vntol_v: float = 1e-12
    max_iterations: int = 200
    kcl_rtol: float = 1e-8
    kcl_atol_a: float = 1e-18


@dataclass(frozen=True)
class DCSolution:
    """Operating point of a batch of circuits.

    Attributes:
        voltages_v: ``(batch, n_nodes)`` node voltages.
        source_current_a: ``(batch, S)`` current each voltage source delivers into its node.
        amplifier_current_a: ``(batch, A)`` current each amplifier delivers into its output node.
        iterations: ``(batch,)`` Newton iterations each circuit took.
        kcl_residual_a: ``(batch,)`` largest |KCL residual| over the free nodes.
    """

    voltages_v: torch.Tensor
    source_current_a: torch.Tensor
    amplifier_current_a: torch.Tensor
    iterations: torch.Tensor
    kcl_residual_a: torch.Tensor


class _Stamps:
    """Index bookkeeping of one topology: which nodes are free, and where each element stamps."""

    def __init__(self, circuit: Circuit, device: torch.device) -> None:
        n = circuit.n_nodes
        self.n = n
        is_source = torch.zeros(n + 1, dtype=torch.bool)
        is_source[circuit.source_nodes] = True
        is_source[n] = True  # ground: known (0 V)
        self.free = (~is_source[:n]).nonzero().flatten().to(device)
        self.F = self.free.numel()
        # position of each extended node (index n = ground) among the free unknowns, -1 if known
        pos = torch.full((n + 1,), -1, dtype=torch.long)
        pos[self.free.cpu()] = torch.arange(self.F)
        self.pos = pos.to(device)
        self.device = device

        amp_in, amp_out = circuit.amplifier_nodes[:, 0], circuit.amplifier_nodes[:, 1]
        self.amp_levels = []  # downstream first; each level: amplifier indices
        order = circuit.amplifier_order()
        depth = self._depths(circuit)
        for d in sorted(set(depth.values()), reverse=True):
            ks = torch.tensor([k for k in order if depth[k] == d], dtype=torch.long, device=device)
            self.amp_levels.append(ks)
        self.amp_in_ext = self.ext(amp_in).to(device)
        self.amp_out_pos = self.pos[self.ext(amp_out).to(device)]
        self.amp_in_pos = self.pos[self.amp_in_ext]

    @staticmethod
    def _depths(circuit: Circuit) -> dict[int, int]:
        out_of = {int(o): k for k, o in enumerate(circuit.amplifier_nodes[:, 1].tolist())}
        depth = {}
        for k, (i, _) in enumerate(circuit.amplifier_nodes.tolist()):
            d, j = 0, out_of.get(int(i))
            while j is not None:
                d += 1
                j = out_of.get(int(circuit.amplifier_nodes[j, 0]))
            depth[k] = d
        return depth

    def ext(self, idx: torch.Tensor) -> torch.Tensor:
        """Node indices with ground mapped to the extended index n."""
        return torch.where(idx == GROUND, self.n, idx)


def _batch(values: torch.Tensor, b: int) -> torch.Tensor:
    return values.expand(b, -1) if values.dim() == 1 else values


def kcl_currents(circuit: Circuit, voltages_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Net current leaving every node through the elements, with the amplifiers' share moved to their inputs.

    Args:
        circuit: the circuit.
        voltages_v: ``(batch, n_nodes)`` node voltages.

    Returns:
        ``net (batch, n_nodes + 1)``: current leaving each node (index n: ground)
        through resistors and diodes, minus the injected current, plus the
        current each amplifier draws from its input; amplifier outputs hold 0
        (the amplifier balances them). ``amp (batch, A)``: current each
        amplifier delivers into its output node. At a solution ``net`` is zero
        at every free node and equals the delivered current at every source.
    """
    b, n = voltages_v.shape
    dev = voltages_v.device
    v = torch.cat([voltages_v, torch.zeros(b, 1, dtype=voltages_v.dtype, device=dev)], 1)
    ext = lambda i: torch.where(i == GROUND, n, i).to(dev)  # noqa: E731
    net = torch.zeros(b, n + 1, dtype=voltages_v.dtype, device=dev)
    if len(circuit.resistor_nodes):
        a, c = ext(circuit.resistor_nodes[:, 0]), ext(circuit.resistor_nodes[:, 1])
        i = _batch(circuit.conductance_s.to(dev), b) * (v[:, a] - v[:, c])
        net.index_add_(1, a, i)
        net.index_add_(1, c, -i)
    for group in circuit.diodes:
        a, c = ext(group.anode), ext(group.cathode)
        i = group.model.current(v[:, a] - v[:, c] - group.bias_v.to(dev))
        net.index_add_(1, a, i)
        net.index_add_(1, c, -i)
    if len(circuit.current_nodes):
        net.index_add_(1, ext(circuit.current_nodes), -_batch(circuit.current_a.to(dev), b))
    amp = torch.zeros(b, len(circuit.amplifier_nodes), dtype=voltages_v.dtype, device=dev)
    if len(circuit.amplifier_nodes):
        cg = _batch(circuit.current_gain.to(dev), b)
        amp_in, amp_out = ext(circuit.amplifier_nodes[:, 0]), ext(circuit.amplifier_nodes[:, 1])
        for k in circuit.amplifier_order():
            amp[:, k] = net[:, amp_out[k]]
            net[:, amp_in[k]] += cg[:, k] * amp[:, k]
            net[:, amp_out[k]] = 0.0
    return net, amp


def _linear_system(circuit: Circuit, st: _Stamps, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``J_lin (b or 1, F, F)``, ``rhs_lin (b, F)`` of the resistive part, and known voltages ``(b, n + 1)``."""
    dev, n, F = st.device, st.n, st.F
    known = torch.zeros(b, n + 1, dtype=DTYPE, device=dev)
    if len(circuit.source_nodes):
        known[:, circuit.source_nodes.to(dev)] = _batch(circuit.source_v.to(dev), b)
    g = circuit.conductance_s.to(dev)
    gb = 1 if g.dim() == 1 else b
    g = g.reshape(gb, -1)
    G = torch.zeros(gb, (n + 1) * (n + 1), dtype=DTYPE, device=dev)
    if len(circuit.resistor_nodes):
        a, c = st.ext(circuit.resistor_nodes[:, 0].to(dev)), st.ext(circuit.resistor_nodes[:, 1].to(dev))
        for r, s, sign in ((a, a, 1.0), (c, c, 1.0), (a, c, -1.0), (c, a, -1.0)):
            G.index_add_(1, r * (n + 1) + s, sign * g)
    G = G.view(gb, n + 1, n + 1)
    rows = G[:, st.free]
    J = rows[:, :, st.free].contiguous()
    rhs = -(rows @ known.unsqueeze(-1)).squeeze(-1) if gb == b else -(known @ rows[0].T)
    if len(circuit.current_nodes):
        p = st.pos[st.ext(circuit.current_nodes.to(dev))]
        keep = p >= 0
        rhs.index_add_(1, p[keep], _batch(circuit.current_a.to(dev), b)[:, keep])
    return J, rhs, known


def _stamp_diodes(circuit, st, J, rhs, known, vd_groups, active):
    """Add every diode's companion model (linearised at ``vd_groups``) to ``J (b, F, F)`` and ``rhs (b, F)``."""
    b, F = rhs.shape
    Jf = J.view(b, F * F)
    for group, vd in zip(circuit.diodes, vd_groups):
        dev = st.device
        a, c = st.ext(group.anode.to(dev)), st.ext(group.cathode.to(dev))
        pa, pc = st.pos[a], st.pos[c]
        g = group.model.conductance(vd)
        j = group.model.current(vd) - g * vd - g * group.bias_v.to(dev)
        ka, kc = known[active][:, a], known[active][:, c]
        fa, fc = pa >= 0, pc >= 0
        both = fa & fc
        Jf.index_add_(1, pa[fa] * F + pa[fa], g[:, fa])
        Jf.index_add_(1, pc[fc] * F + pc[fc], g[:, fc])
        Jf.index_add_(1, pa[both] * F + pc[both], -g[:, both])
        Jf.index_add_(1, pc[both] * F + pa[both], -g[:, both])
        # anode row: -(j) + g V_c(known);  cathode row: +j + g V_a(known)
        rhs.index_add_(1, pa[fa], (-j + g * kc * (~fc))[:, fa])
        rhs.index_add_(1, pc[fc], (j + g * ka * (~fa))[:, fc])


def _apply_amplifiers(circuit, st, J, rhs, known, active):
    """Fold each amplifier output's KCL row into its input row and replace it by ``V_out - gain V_in = 0``."""
    if not len(circuit.amplifier_nodes):
        return
    b = rhs.shape[0]
    dev = st.device
    gain = _batch(circuit.gain.to(dev), known.shape[0])[active]
    cg = _batch(circuit.current_gain.to(dev), known.shape[0])[active]
    for ks in st.amp_levels:
        pin, pout = st.amp_in_pos[ks], st.amp_out_pos[ks]
        free_in = pin >= 0
        if free_in.any():
            kk = ks[free_in]
            w = cg[:, kk]
            J.index_add_(1, pin[free_in], w.unsqueeze(-1) * J[:, pout[free_in], :])
            rhs.index_add_(1, pin[free_in], w * rhs[:, pout[free_in]])
    pin, pout = st.amp_in_pos, st.amp_out_pos
    J[:, pout, :] = 0.0
    J[:, pout, pout] = 1.0
    free_in = pin >= 0
    if free_in.any():
        J[:, pout[free_in], pin[free_in]] = -gain[:, free_in]
    rhs[:, pout] = gain * known[active][:, st.amp_in_ext]  # 0 where the input is free (known is 0 there)
    if free_in.any():
        rhs[:, pout[free_in]] = 0.0
    del b


def solve_dc(
    circuit: Circuit,
    *,
    batch_size: int | None = None,
    initial_v: torch.Tensor | None = None,
    options: SolverOptions | None = None,
    device: torch.device | str | None = None,
    check_kcl: bool = True,
) -> DCSolution:
    """DC operating point of a batch of circuits.

    Args:
        circuit: the circuits (values of shape ``(k,)`` shared, ``(batch, k)`` per circuit).
        batch_size: number of circuits when every value is shared (default 1).
        initial_v: ``(batch, n_nodes)`` voltages to start Newton from (e.g. the
            free phase's solution when solving a nudged phase); default 0 V
            across every diode.
        options: tolerances (:class:`SolverOptions`).
        device: where to solve (default: where the circuit's tensors are, CPU).
        check_kcl: verify Kirchhoff's current law at the solution.

    Returns:
        the :class:`DCSolution`.

    Raises:
        SimulationError: a singular circuit (names the sample), no convergence
            within ``max_iterations`` (names the samples and the node that
            moved most), or a KCL residual above tolerance.
    """
    opts = options or SolverOptions()
    b = circuit.batch_size or batch_size or 1
    if circuit.batch_size is not None and batch_size is not None and batch_size != circuit.batch_size:
        raise SimulationError(f"batch_size {batch_size} disagrees with the circuit's per-circuit values ({circuit.batch_size})")
    dev = torch.device(device) if device is not None else circuit.conductance_s.device
    st = _Stamps(circuit, dev)
    J_lin, rhs_lin, known = _linear_system(circuit, st, b)
    n, F = st.n, st.F

    # operating voltages of the diodes
    def diode_v(v_ext: torch.Tensor) -> list[torch.Tensor]:
        return [
            v_ext[:, st.ext(g.anode.to(dev))] - v_ext[:, st.ext(g.cathode.to(dev))] - g.bias_v.to(dev) for g in circuit.diodes
        ]

    if initial_v is not None:
        if tuple(initial_v.shape) != (b, n):
            raise SimulationError(f"initial_v must have shape ({b}, {n}), got {tuple(initial_v.shape)}")
        start = known.clone()
        start[:, st.free] = initial_v.to(dev, DTYPE)[:, st.free]
        vd = diode_v(start)
    else:
        vd = [torch.zeros(b, len(g), dtype=DTYPE, device=dev) for g in circuit.diodes]

    v_free = torch.zeros(b, F, dtype=DTYPE, device=dev)
    iterations = torch.zeros(b, dtype=torch.long, device=dev)
    active = torch.arange(b, device=dev)
    previous = torch.full((b, F), float("nan"), dtype=DTYPE, device=dev)
    last_change = torch.zeros(b, F, dtype=DTYPE, device=dev)
    for it in range(1, opts.max_iterations + 1):
        m = active.numel()
        J = (J_lin[active] if J_lin.shape[0] == b and b > 1 else J_lin.expand(m, F, F)).clone()
        rhs = rhs_lin[active].clone()
        _stamp_diodes(circuit, st, J, rhs, known, [v[active] for v in vd], active)
        _apply_amplifiers(circuit, st, J, rhs, known, active)
        solution, info = torch.linalg.solve_ex(J, rhs)
        if (info != 0).any() or not torch.isfinite(solution).all():
            bad = active[(info != 0) | ~torch.isfinite(solution).all(1)]
            raise SimulationError(
                f"singular circuit matrix for sample(s) {bad[:5].tolist()} at Newton iteration {it}: "
                f"a node without a DC path, or a loop of amplifiers / sources ({circuit.describe()})"
            )
        v_free[active] = solution
        iterations[active] = it
        v_ext = known[active].clone()
        v_ext[:, st.free] = solution
        vd_new = diode_v(v_ext)
        limited = torch.zeros(m, dtype=torch.bool, device=dev)
        for g, (group, old, new) in enumerate(zip(circuit.diodes, vd, vd_new)):
            lim = group.model.limit(new, old[active])
            limited |= (lim != new).any(1)
            vd[g][active] = lim
        change = (solution - previous[active]).abs()
        last_change[active] = torch.nan_to_num(change, nan=float("inf"))
        tol = opts.reltol * solution.abs().amax(1, keepdim=True) + opts.vntol_v
        done = (change <= tol).all(1) & ~limited
        previous[active] = solution
        active = active[~done]
        if active.numel() == 0:
            break
    else:
        worst = last_change[active].amax(0).argmax()
        node = int(st.free[worst])
        raise SimulationError(
            f"DC solution did not converge within {opts.max_iterations} Newton iterations for sample(s) "
            f"{active[:5].tolist()} ({active.numel()} in all); largest last change "
            f"{last_change[active].max().item():.3g} V at node {node} '{circuit.node_names[node]}'"
        )

    voltages = known[:, :n].clone()
    voltages[:, st.free] = v_free
    net, amp = kcl_currents(circuit, voltages)
    free_net = net[:, st.free]
    is_amp_out = torch.zeros(F, dtype=torch.bool, device=dev)
    is_amp_out[st.amp_out_pos] = True
    residual = free_net[:, ~is_amp_out].abs().amax(1) if (~is_amp_out).any() else torch.zeros(b, dtype=DTYPE, device=dev)
    if check_kcl:
        scale = _largest_element_current(circuit, voltages)
        bad = residual > opts.kcl_rtol * scale + opts.kcl_atol_a
        if bad.any():
            s = int(bad.nonzero()[0])
            node_pos = int(torch.where(is_amp_out, 0.0, free_net[s].abs()).argmax())
            node = int(st.free[node_pos])
            raise SimulationError(
                f"Kirchhoff's current law fails at node {node} '{circuit.node_names[node]}' of sample {s}: "
                f"residual {residual[s].item():.3g} A against currents up to {scale[s].item():.3g} A"
            )
    src = net[:, circuit.source_nodes.to(dev)] if len(circuit.source_nodes) else torch.zeros(b, 0, dtype=DTYPE, device=dev)
    return DCSolution(voltages, src, amp, iterations, residual)


def _largest_element_current(circuit: Circuit, voltages: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` the largest |current| through any resistor, diode or current source."""
    b, n = voltages.shape
    dev = voltages.device
    v = torch.cat([voltages, torch.zeros(b, 1, dtype=voltages.dtype, device=dev)], 1)
    ext = lambda i: torch.where(i == GROUND, n, i).to(dev)  # noqa: E731
    largest = torch.zeros(b, dtype=voltages.dtype, device=dev)
    if len(circuit.resistor_nodes):
        a, c = ext(circuit.resistor_nodes[:, 0]), ext(circuit.resistor_nodes[:, 1])
        largest = torch.maximum(largest, (_batch(circuit.conductance_s.to(dev), b) * (v[:, a] - v[:, c])).abs().amax(1))
    for group in circuit.diodes:
        a, c = ext(group.anode), ext(group.cathode)
        largest = torch.maximum(largest, group.model.current(v[:, a] - v[:, c] - group.bias_v.to(dev)).abs().amax(1))
    if len(circuit.current_nodes):
        largest = torch.maximum(largest, _batch(circuit.current_a.to(dev), b).abs().amax(1))
    return largest
